"""Nothing an ordinary command does destroys committed results: the README's commands, run on a copy of
results/ as a new user runs them and each interrupted at a random point, leave every file's bytes as they were,
but for the runs with a committed resume point, which go on: their records only grow."""

import json
import os
import random
import shutil
import signal
import subprocess
import time

from conftest import ROOT, cli, entry_point, tree_bytes

# what the README tells a user to type, in its order (make run, make sweep, Table 2's row, make paper, make plot,
# the report); the long-run rows of Table 2 have no checkpoint in git, the rest are complete
README_COMMANDS = [
    ["run", "configs/mnist.yaml"],
    ["plot", "results/mnist"],
    ["sweep", "configs/sweeps/p_fixed_n.yaml"],
    ["plot", "results/p_fixed_n"],
    ["sweep", "configs/paper/table2.yaml", "--only", "label=dropout + max-norm ReLU 3x1024", "--workers", "3"],
    ["sweep", "configs/paper/table2.yaml", "--only", "label=dropout + max-norm ReLU 3x1024", "--only",
     "label=dropout ReLU 3x1024", "--only", "seed=0", "--precision", "bf16", "--workers", "1"],
    ["run", "configs/paper/table2.yaml"],
    ["beyond", "conv", "configs/beyond/conv.yaml"],
    ["sweep", "configs/paper/fig10_controls.yaml", "--scale", "medium"],
    ["sweep", "configs/paper/fig4.yaml", "--scale", "quick"],
    ["plot"],
    ["report"],
]


def test_the_readme_commands_interrupted_anywhere_change_no_committed_byte(tmp_path):
    shutil.copytree(ROOT / "results", tmp_path / "results")
    os.symlink(ROOT / "configs", tmp_path / "configs")  # the paths as the README gives them
    committed = tree_bytes(ROOT / "results", checkpoints=False)
    rng = random.Random(29)
    grown: set[str] = set()  # folders where a resumed run went on, so their plots and the report may follow
    # each command twice: stopped early (loading and checking) and late (where it would train, had it runs to
    # train: the Table 2 row took 25 s to replace its curves when it restarted them); one that ends first, ends
    for args, (early, late) in [(a, w) for w in ((0.2, 2.0), (4.0, 12.0)) for a in README_COMMANDS]:
        p = subprocess.Popen([entry_point(), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + rng.uniform(early, late)
        while p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        interrupted = p.poll() is None
        if interrupted:  # a Ctrl-C while torch is imported may abort the interpreter itself: only bytes count then
            p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=300)
        if not interrupted:  # ran to its end: done, or runs it cannot finish (Table 2's stopped rows)
            assert p.returncode in (0, 1) and "Traceback" not in err, (args, err)
        now = tree_bytes(tmp_path / "results", checkpoints=False)
        moved = [k for k in committed if now.get(k) != committed[k]]
        grown.update(k.parts[0] for k in moved if grew(k, committed, now))
        changed = sorted(str(k) for k in moved if not grew(k, committed, now) and not drawn_from(k, grown))
        assert not changed, (args, changed[:5])


def drawn_from(path, grown) -> bool:
    """A plot of a folder whose runs went on, or the report once any did: redrawn from the grown records."""
    return bool(grown) and (path.parts[0] in grown and path.parts[1:2] == ("plots",)
                            or path.parts[0] in ("REPORT.md", "report"))


def grew(path, committed, now) -> bool:
    """A resumed run's records, grown and not rewritten: its curve and the sessions appended to, its provenance
    with one more sitting, all else as committed; only in a folder whose runs have resume points."""
    if path not in now or not any(p.name == "resume.pt" and p.parts[0] == path.parts[0] for p in committed):
        return False
    old, new = committed[path], now[path]
    if path.name in ("metrics.csv", "sessions.jsonl"):
        return new.startswith(old)
    if path.name == "env.json":
        a, b = json.loads(old), json.loads(new)
        sittings = a.pop("resumed", [])
        return b.pop("resumed", [])[:len(sittings)] == sittings and a == b
    return False


def test_table2s_stopped_rows_are_kept_whole_by_the_readme_command(tmp_path, monkeypatch):
    """The README's command for Table 2's max-norm row, run to its end: the rows stopped with no checkpoint stay
    as they are, the command says so and how to restart them, and the report still shows them."""
    from dropout_lab.sweeps import runner

    def no_training(*args, **kwargs):  # hours of training would follow: fail at once instead
        raise AssertionError("a stopped row with no checkpoint was trained again")

    monkeypatch.setattr(runner, "train_stack", no_training)
    shutil.copytree(ROOT / "results" / "table2", tmp_path / "table2")
    before = tree_bytes(tmp_path / "table2")
    r = cli("sweep", "configs/paper/table2.yaml", "--only", "label=dropout + max-norm ReLU 3x1024", "--workers", "3",
            "--out", tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("no checkpoint to resume from: kept as it is, not trained") == 3
    assert "3 run(s) stopped earlier with no checkpoint" in " ".join(r.stderr.split())
    assert tree_bytes(tmp_path / "table2") == before
    r = cli("report", tmp_path)  # another folder's report goes next to it, never over results/REPORT.md
    assert r.returncode == 0, r.stderr
    assert "**stopped**" in (tmp_path / "REPORT.md").read_text() and (tmp_path / "report").is_dir()
    assert tree_bytes(tmp_path / "table2") == before
