"""The tracking journal under damage: a cut last line, a damaged line, a damaged offset file, a disk that cannot
take a whole line. Each is found, kept and said (which operation, trial and step), never dropped in silence."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from orchestrator.journal import Journal, decode, encode


def fill(tmp_path, n=3) -> Journal:
    j = Journal(tmp_path)
    j.append(("start", "a_00001", "t001 x=0.5", {}, {}, None))
    for step in range(1, n + 1):
        j.append(("metrics", "a_00001", step, 1000 + step, {"score": step / 10}))
    j.close()
    return j


def test_each_line_carries_its_checksum_and_lines_of_an_older_danlu_still_read():
    line = encode(("metrics", "t", 3, 1, {"score": 0.5}))
    assert decode(line) == ("metrics", "t", 3, 1, {"score": 0.5})
    assert decode(line.replace(b"0.5", b"0.6")) is None  # whole, but not what was written
    assert decode(b'["metrics", "t", 3, 1, {"score": 0.5}]\n') == ("metrics", "t", 3, 1, {"score": 0.5})
    assert decode(b'["metrics", "t", 3, 1, {"sco\n') is None


def test_a_cut_last_line_is_kept_aside_and_said_with_its_trial_and_step(tmp_path):
    fill(tmp_path)
    path = tmp_path / Journal.JOURNAL
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])  # the last line, step 3, cut by 5 bytes
    j = Journal(tmp_path)
    assert [d.step for d in j.damage] == [3] and j.damage[0].trial == "a_00001" and j.damage[0].kind == "metrics"
    assert j.logged_steps() == {"a_00001": 2}  # a restore resumes at most from step 2: step 3 is reported again
    (note,) = j.report()
    assert "cut short" in note and "t001 (a_00001)" in note and "step 3" in note
    assert (tmp_path / Journal.DAMAGED).read_bytes() == whole[whole.rfind(b"\n", 0, len(whole) - 1) + 1:-5] + b"\n"
    j.append(("metrics", "a_00001", 3, 1003, {"score": 0.3}))  # the next line starts clean
    assert [op[2] for op, _ in j.unapplied() if op[0] == "metrics"] == [1, 2, 3]


def test_a_damaged_line_past_the_offset_is_skipped_and_said(tmp_path):
    fill(tmp_path)
    path = tmp_path / Journal.JOURNAL
    path.write_bytes(path.read_bytes().replace(b'"score": 0.2', b'"score": 0.9'))
    j = Journal(tmp_path)
    ops = j.unapplied()
    assert [op[2] for op, _ in ops if op[0] == "metrics"] == [1, 3]
    assert [(d.why, d.step) for d in j.damage] == [("checksum mismatch", 2)]
    assert any("damaged, and skipped" in n and "step 2" in n for n in j.report())


def test_a_damaged_offset_file_means_everything_is_sent_again(tmp_path):
    fill(tmp_path)
    j = Journal(tmp_path)
    j.mark_applied(j.unapplied()[-1][1])
    j.close()
    offset = tmp_path / Journal.OFFSET
    good = offset.read_text()
    for damaged in (good[:-3], "garbage", good.split()[0][:-1], "", f"{10**9}"):
        offset.write_text(damaged)
        j = Journal(tmp_path)
        assert j.applied() == 0 and len(j.unapplied()) == 4, damaged
        assert any("offset file" in n for n in j.report()), damaged
        j.close()
    offset.write_text(good)
    assert Journal(tmp_path).unapplied() == []
    offset.write_text(good.split()[0])  # an earlier danlu's offset, without its checksum: still taken
    assert Journal(tmp_path).unapplied() == []


def test_a_disk_that_cannot_take_a_whole_line_leaves_none_of_it(tmp_path):
    """A file size limit makes write(2) short, then fail, as a full disk does: the journal raises and keeps no
    half line, so the next driver finds it whole."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parents[1])!r})
        from orchestrator.journal import Journal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        j = Journal({str(tmp_path)!r})
        j.append(("start", "a", "t000", {{}}, {{}}, None))
        size = j._size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 30, size + 30))
        try:
            j.append(("metrics", "a", 1, 1, {{"score": 0.123456789}}))
        except OSError as exc:
            print("raised", exc.errno)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "raised" in out.stdout, out.stderr
    data = (tmp_path / Journal.JOURNAL).read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    j = Journal(tmp_path)
    assert j.damage == [] and [op[0] for op, _ in j.unapplied()] == ["start"]
