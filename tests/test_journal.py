"""The tracking journal under damage: a cut last line, a damaged line, a damaged offset file, a disk that cannot
take a whole line. Each is found, kept and said (which operation, trial and step), never dropped in silence."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from orchestrator.tracking.journal import Journal, Op, decode, encode, op


def fill(tmp_path, n=3) -> Journal:
    j = Journal(tmp_path)
    j.append(op("start", trial_id="a_00001", name="t001 x=0.5", params={}, tags={}, start_ms=None))
    for step in range(1, n + 1):
        j.append(op("metrics", trial_id="a_00001", step=step, ts=1000 + step, values={"score": step / 10}))
    j.close()
    return j


def test_each_line_carries_its_checksum_and_lines_of_an_older_danlu_still_read():
    m = Op("metrics", {"trial_id": "t", "step": 3, "ts": 1, "values": {"score": 0.5}})
    line = encode(m)
    assert line.startswith(b'{"op": "metrics", "v": 2, "trial_id": "t", "step": 3')  # named fields, a format version
    assert decode(line) == m
    assert decode(line.replace(b"0.5", b"0.6")) is None  # whole, but not what was written
    # an earlier danlu's lines: positional, with its checksum (format 1) or without one (the oldest)
    old = b'["metrics", "t", 3, 1, {"score": 0.5}]'
    assert decode(old + b"\t" + f"{__import__('zlib').crc32(old):08x}".encode() + b"\n") == m
    assert decode(old + b"\n") == m
    assert decode(b'["metrics", "t", 3, 1, {"sco\n') is None
    assert decode(b'{"op": "no_such_op", "v": 2}\n') is None
    with pytest.raises(TypeError, match="no field"):
        op("metrics", trial=1)  # a field the journal's format does not have: refused before it is written


def test_a_journal_of_an_earlier_danlu_replays_with_its_steps_and_trial_names(tmp_path):
    """A journal written by the previous format (positional lists with a checksum) opens, replays and tells how
    far each trial got, as today's does."""
    import zlib

    lines = [["start", "a_00001", "t001 x=0.5", {}, {}, None]] + [["metrics", "a_00001", s, 1000 + s, {"score": s / 10}]
                                                                   for s in (1, 2)]
    text = "".join(f"{json.dumps(x)}\t{zlib.crc32(json.dumps(x).encode()):08x}\n" for x in lines)
    (tmp_path / Journal.JOURNAL).write_text(text)
    j = Journal(tmp_path)
    assert [o.name for o, _ in j.unapplied()] == ["start", "metrics", "metrics"]
    assert j.unapplied()[0][0].fields["name"] == "t001 x=0.5"
    assert j.logged_steps() == {"a_00001": 2} and j.names == {"a_00001": "t001"}


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
    j.append(op("metrics", trial_id="a_00001", step=3, ts=1003, values={"score": 0.3}))  # the next line starts clean
    assert [o.get("step") for o, _ in j.unapplied() if o.name == "metrics"] == [1, 2, 3]


def test_a_damaged_line_past_the_offset_is_skipped_and_said(tmp_path):
    fill(tmp_path)
    path = tmp_path / Journal.JOURNAL
    path.write_bytes(path.read_bytes().replace(b'"score": 0.2', b'"score": 0.9'))
    j = Journal(tmp_path)
    ops = j.unapplied()
    assert [o.get("step") for o, _ in ops if o.name == "metrics"] == [1, 3]
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


@pytest.mark.integration
def test_a_disk_that_cannot_take_a_whole_line_leaves_none_of_it(tmp_path):
    """A file size limit makes write(2) short, then fail, as a full disk does: the journal raises and keeps no
    half line, so the next driver finds it whole."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parents[1])!r})
        from orchestrator.tracking.journal import Journal, op
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        j = Journal({str(tmp_path)!r})
        j.append(op("start", trial_id="a", name="t000", params={{}}, tags={{}}, start_ms=None))
        size = j._size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 30, size + 30))
        try:
            j.append(op("metrics", trial_id="a", step=1, ts=1, values={{"score": 0.123456789}}))
        except OSError as exc:
            print("raised", exc.errno)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "raised" in out.stdout, out.stderr
    data = (tmp_path / Journal.JOURNAL).read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    j = Journal(tmp_path)
    assert j.damage == [] and [o.name for o, _ in j.unapplied()] == ["start"]
