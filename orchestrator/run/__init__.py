"""A sweep running: `danlu sweep` (sweep: plan -> lock -> store -> Ray -> Tuner.fit -> summary and report), the
Tuner and its callbacks (tuner), the live view (progress), stalled trials (stalls), why a sweep stops early
(interrupts), and its last lines (summary).

Imports: launch and everything below it. Not remote or review, which build on it."""
