"""Probe every ``gatelab`` command with bad input and classify what it does.

The command tree is read from ``gatelab.cli.build_parser()``, so a new command
or option is probed without editing this script. For each command it makes:

- for every input path (positional or option): a missing path, an empty file,
  random bytes, a truncated valid file, a file of the wrong kind (a PNG where a
  checkpoint is expected, a checkpoint where an image is), a folder where a file
  is expected (or a file where a folder is), and for some formats an edited
  header (a renamed tensor, a config value ``"x"``, a word2vec header that asks
  for more rows than the file holds, an image that claims 10^10 pixels);
- for every output path (``--out``, ``--json``, ``--log-dir``): a read-only
  mount, a full disk, a path through a regular file, an existing folder where a
  file is wanted (or a file where a folder is) and the empty string; except for
  the full disk these run with long training settings (``--epochs 1000``), so a
  command that checks its output only after training is still running at the
  timeout (TIMEOUT);
- for every number: 0, -1, nan, inf and 1e30 (10^30 for integers);
- for ``--device``: an unknown name and a CUDA device that is not there; for
  other free strings: a bogus value.

Valid inputs come from the commands themselves: an option whose help names
```gatelab X Y``` gets a small file written by that command (run once, with the
cheapest settings); images, text corpora and PNGs are made here.

Each case runs in a child process with a timeout and is classified:

OK         exit 2, exactly one line on stderr, starting with ``gatelab``
MULTILINE  exit 2, but not one ``gatelab`` line
TRACEBACK  'Traceback' on stderr, an exit status other than 0/2/130/143, or a signal
NONSENSE   exit 0 (or still training at the timeout) on input that should be refused
TIMEOUT    still running at the timeout on a bad file or a bad output path
ACCEPTED   exit 0 on a value that is in the option's domain (0 for --seed, say)
WARNED     exit 0 with a warning on stderr, where a loud warning is an accepted answer
SKIPPED    not run (say why)

By default a child is ``os.fork()`` of this process after ``gatelab`` has been
imported, running ``gatelab.cli.main(argv)`` exactly as ``python -m gatelab``
would (uncaught exceptions print their traceback and exit 1): that saves the
seconds of import per case. ``--spawn`` runs the real ``python -m gatelab``.
Every case is printed as the command line that reproduces it.

Read-only and full output folders are tmpfs mounts (``mount -t tmpfs``), which
needs root; where mounting fails those cases are SKIPPED and the summary says so.

    python tools/probe_cli.py                         # every command
    python tools/probe_cli.py --commands gates,lm --jobs 2 --json probe.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
_SHARED_DATA = Path(__file__).resolve().parents[1].parent.parent / "shared" / "data"
if "GATELAB_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["GATELAB_DATA"] = str(_SHARED_DATA)

STATUSES = ("OK", "TRACEBACK", "NONSENSE", "MULTILINE", "TIMEOUT", "ACCEPTED", "WARNED", "SKIPPED")
DEFECTS = ("TRACEBACK", "NONSENSE", "MULTILINE", "TIMEOUT")

# The cheapest settings, applied to every option of these names that a command has.
CHEAP = {
    "--epochs": "1",
    "--train-examples": "64",
    "--val-size": "64",
    "--count": "2",
    "--steps": "2",
    "--panels": "1",
    "--hidden": "8",
    "--embed": "8",
    "--size": "8",
    "--batch-size": "16",
    "--max-train-words": "2000",
    "--words": "5",
    "--min-count": "1",
    "--workers": "1",
    "--threads": "1",
    "--bptt": "5",
    "--samples": "5",
    "--baselines": "none",
    "--plastic-from": "1",
    "--harden-from": "2",
    "--quiet": None,
}
# Where one command needs more than the cheapest (npn hardens after its plastic stage: two epochs at least).
CHEAP_FOR = {
    "npn train": {"--epochs": "2"},
    "defense train": {"--attacks": "fgsm", "--eps": "0.3"},
    "defense train-classifier": {"--model": "D"},
    "activity train": {"--val-size": "2", "--frames": "8"},
    "vi lda": {"--val-size": "0.2", "--topics": "3"},
    "vi gmm": {"--val-size": "0.2"},
}
# Settings under which a command that trains first and checks its output afterwards is still busy at the timeout.
# "" drops the cheap setting (all the training data).
LONG = {"--epochs": "1000", "--steps": "100000", "--train-examples": "", "--max-train-words": ""}
# Numbers for which 0 is a meaningful value ("command:dest" or "dest").
ZERO_OK = {
    "seed",
    "lam",
    "k",
    "sample",
    "full_sync_times",
    "min_count",
    "clip",
    "panels",
    "min_alpha",
    "lm train:alpha",
    "lowres_factor",
    "frame_dropout_rate",  # no frames dropped: the literal meaning, not a default
}
# Numbers for which 1e30 means "never" or "no cap", or is legal however long it takes.
HUGE_OK = {
    "epochs",
    "batch_size",
    "checkpoint_every",
    "max_train_words",
    "max_vocab",
    "plastic_from",
    "harden_from",
    "k",
    "clip",
    "temperature",
    "words",
    "steps",
    "lam",
    "sync_every",
    "min_sync_words",
    "full_sync_times",
    "panels",
    "lr",
    "dist_timeout",
    # Weights of a loss term, like lam: a huge one makes that term all the objective, and the run (Adam or clipped
    # steps) stays finite, its scores showing it (gates --weight-decay 1e30: test error 90%, weights finite).
    "injection_weight",
    "weight_decay",
    "weight",
    "r",
    "reg",
    "pgd_alpha",  # PGD's step, projected back into the eps ball: a huge one jumps to the ball's surface
    # WordRank's positive reals with no upper bound in the paper (checked: vectors finite after a run)
    "xi_alpha",
    "xi_beta",
    "t",
    "x_max",
    "epsilon",
    "tau",  # SVI's delay in (tau + t)^-kappa: any tau >= 0 keeps Robbins-Monro's conditions
}
FREE_TEXT = {"prime"}  # strings that may be anything
OUTPUT_DESTS = {"out", "json", "log_dir", "overlay"}
# Values hidden inside a string argument: "command:dest" -> extra bad values.
# Input files whose help names no `gatelab X` command: "command:dest" (or "dest") -> the command that writes them;
# "CMD+.SUFFIX" is the sidecar folder CMD writes beside its --out (defense train's OUT.pairs).
PRODUCT_OF = {
    "defense train-classifier:vae": "defense train",
    "defense train-classifier:init": "defense train-classifier",
    "defense evaluate:mode2": "defense train-classifier",
    "defense evaluate:pgd_trained": "defense train-classifier",
    "defense fine-tune:pairs": "defense train+.pairs",
    "nice train-classifier:init": "nice train-classifier",
}
ENCODED_NUMBERS = {"word2vec train:corpus": ["zipf:0", "zipf:-1", "zipf:nan", "zipf:1e30"]}


@dataclass
class Case:
    command: str  # "gates train"
    target: str  # the option or positional probed, e.g. "--out" or "checkpoint"
    kind: str  # "missing", "random", "num:0", "out:readonly", "baseline", ...
    argv: list  # what follows "gatelab"
    expect: str  # "refuse", "run", "refuse-or-warn", "either"
    bad_out: bool = False  # the output path is bad: must be refused before any work
    status: str = ""
    rc: int | None = None
    seconds: float = 0.0
    stderr: str = ""
    note: str = ""

    @property
    def line(self) -> str:
        return "python -m gatelab " + shlex.join(self.argv)


# ---------------------------------------------------------------------------------------------- the parser tree


def leaf_commands(parser: argparse.ArgumentParser, path=()):
    """Yield (name, parser) for every command that has no subcommands, e.g. ("gates train", p)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield " ".join(path), parser
    for s in subs:
        for name, sub in s.choices.items():
            yield from leaf_commands(sub, (*path, name))


def _opt(action) -> str:
    """The option string that names an action (its longest), or its dest for a positional."""
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _text(action) -> str:
    return " ".join(map(str, (action.dest, action.metavar or "", action.help or "", *action.option_strings))).lower()


def number_kind(action) -> str | None:
    """'int' or 'float' when the option takes a number, else None (tried on the type itself, with 1, 2 and 0.5, so
    that a probability in (0, 1) or a count from 2 counts too)."""
    if action.type is None or action.choices or action.nargs == 0:
        return None
    numbers = {}
    for text in ("1", "2", "0.5"):
        try:
            value = action.type(text)
        except Exception:
            continue
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[text] = value
    if not numbers:
        return None
    return "float" if "0.5" in numbers else "int"


def is_output(action) -> bool:
    """An output path: --out and kin, or a folder that defaults to one beside --out (defense train's OUT.pairs)."""
    named = action.dest in OUTPUT_DESTS or action.dest.startswith("out_") or action.dest.endswith("_out")
    return named or "(default: OUT." in (action.help or "")


def output_kind(action) -> str:
    return "dir" if re.search(r"\bfolder|\bdir\b|directory", _text(action)) else "file"


def input_kind(command: str, action, commands: dict) -> str | None:
    """What an input path argument expects: 'product:CMD', 'image', 'text', 'docword', 'csv', 'clips' (a folder of
    labelled skeleton clips), 'skeleton', 'video', 'json:NAME', 'checkpoint', 'dir'."""
    if action.option_strings and action.nargs == 0 or action.choices or number_kind(action) or is_output(action):
        return None
    text, help_ = _text(action), action.help or ""
    if f"{command}:{action.dest}" in PRODUCT_OF:
        return f"product:{PRODUCT_OF[f'{command}:{action.dest}']}"
    m = re.search(r"`gatelab ([\w-]+(?: [\w-]+)?)", help_)
    if m and m.group(1) in commands:
        return f"product:{m.group(1)}"
    m = re.search(r"\b([\w-]+\.json)\b", help_)
    if m:
        return f"json:{m.group(1)}"
    if "word2vec" in text and ("vectors" in action.dest or "binary" in text):
        return "product:word2vec train"
    if "image" in text:
        return "image"
    if "docword" in text:
        return "docword"
    if action.dest == "csv":
        return "csv"
    if "subfolder of clips" in text:
        return "clips"
    if "skeleton" in text:
        return "skeleton"
    if "video" in text:
        return "video"
    if action.dest == "resume" or "checkpoint" in text:
        return "dir" if "run_dir" in text or "folder" in text else "checkpoint"
    if re.search(r"\bdir\b|data_dir|folder", text):
        return "dir"
    if re.search(r"corpus|\btext\b|valid|test", text):
        return "text"
    group = command.split()[0]
    if action.dest == "model" and f"{group} train" in commands:
        return f"product:{group} train"
    return None


# ---------------------------------------------------------------------------------------------- fixtures


def _png(path: Path, size=(28, 28)) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).line([(14, 4), (14, 24)], fill=255, width=3)  # a "1"
    img.save(path, format="PNG")
    return path


def _png_bomb(path: Path) -> Path:
    """A small PNG whose header claims 100000 x 100000 pixels."""
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)))
    return path


def _skeleton(path: Path, label: int, rng: random.Random) -> Path:
    """A 20-frame UTD-MHAD skeleton clip, standing, whose right hand rises (label 0) or swings sideways (1)."""
    import numpy as np

    from gatelab.activity import SkeletonSequence

    noise = np.random.default_rng(rng.getrandbits(32))
    joints = noise.normal(0, 0.05, (20, 20, 3)) + np.array([0, 0, 3.0])
    joints[:, :, 1] += np.linspace(0.6, -1.0, 20)  # head high, feet low
    joints[:, 11, 1 - label] += np.linspace(0, 0.5, 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SkeletonSequence(joints, "utd-mhad20", 30.0, path.name).save(path)


def _edit_safetensors(src: Path, dst: Path, how: str) -> bool:
    """Rename the first tensor, or set the first number in the JSON metadata to "x"."""
    data = src.read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
    except Exception:
        return False
    if how == "renamed-tensor":
        name = next(k for k in header if k != "__metadata__")
        header["renamed." + name] = header.pop(name)
    else:
        meta = header.get("__metadata__") or {}

        def first_number(obj):
            for key, value in obj.items():
                if isinstance(value, dict) and first_number(value):
                    return True
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    obj[key] = "x"
                    return True
            return False

        for key, value in meta.items():
            try:
                parsed = json.loads(value)
            except ValueError:
                continue
            if isinstance(parsed, dict) and first_number(parsed):
                meta[key] = json.dumps(parsed)
                break
        else:
            return False
    raw = json.dumps(header).encode()
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return True


def _edit_word2vec_header(src: Path, dst: Path) -> bool:
    data = src.read_bytes()
    end = data.find(b"\n")
    if end < 0 or not re.fullmatch(rb"\d+ \d+", data[:end].strip()):
        return False
    dst.write_bytes(b"100000000 100000" + data[end:])
    return True


class Fixtures:
    """Valid small inputs, made once: texts and images here, products by running the command that writes them."""

    def __init__(self, root: Path, probe: Probe):
        self.root, self.probe = root, probe
        self.root.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path | None] = {}
        self.notes: dict[str, str] = {}
        self.rng = random.Random(0)

    def valid(self, kind: str) -> Path | None:
        if kind not in self._made:
            self._made[kind] = self._make(kind)
        return self._made[kind]

    def _make(self, kind: str) -> Path | None:
        r = self.root
        if kind == "image":
            return _png(r / "digit.png")
        if kind == "text":
            ptb = Path(os.environ.get("GATELAB_DATA", "")) / "ptb" / "ptb.train.txt"
            lines = ptb.read_text().splitlines()[:300] if ptb.is_file() else []
            words = "the cat sat on a mat and the dog ran to the park with a ball".split()
            if not lines:
                lines = [" ".join(self.rng.choice(words) for _ in range(12)) for _ in range(300)]
            (r / "corpus.txt").write_text("\n".join(lines) + "\n")
            return r / "corpus.txt"
        if kind == "docword":  # a small synthetic UCI bag-of-words corpus
            from gatelab.data.bow import write_docword
            from gatelab.vi import synthetic_lda

            corpus, _ = synthetic_lda(n_docs=60, n_words=40, n_topics=3, seed=0)
            return write_docword(corpus, r / "docword.synthetic.txt")
        if kind == "csv":
            rows = [f"{self.rng.gauss(3 * (i % 2), 1):.4f},{self.rng.gauss(0, 1):.4f}" for i in range(80)]
            (r / "points.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
            return r / "points.csv"
        if kind == "clips":  # two actions, six synthetic skeleton clips each: a hand that rises or swings sideways
            for label, name in enumerate(("raise", "swipe")):
                for i in range(6):
                    _skeleton(r / "clips" / name / f"{i}.npz", label, self.rng)
            return r / "clips"
        if kind == "skeleton":
            return _skeleton(r / "skeleton.npz", 0, self.rng)
        if kind == "video":  # the shared squats clip, if this machine has it (pose extraction needs a person)
            clip = Path(os.environ.get("GATELAB_DATA", "")) / "video" / "tfjs_pose_squats.mp4"
            if not clip.is_file():
                self.notes["video"] = f"no video fixture: {clip} is not here"
                return None
            (r / "video").mkdir(exist_ok=True)
            return Path(shutil.copyfile(clip, r / "video" / clip.name))
        if kind.startswith("product:"):
            command, _, sidecar = kind.split(":", 1)[1].partition("+")
            made = self.probe.produce(command, r)
            return made.with_name(made.name + sidecar) if made and sidecar else made
        if kind.startswith("json:"):
            name = kind.split(":", 1)[1]
            for folder in [p for p in self._made.values() if p and p.is_dir()]:
                if (folder / name).is_file():
                    return folder / name
            for cmd in self.probe.commands:  # a file of that name inside some command's output folder
                if cmd.endswith("train"):
                    made = self.valid(f"product:{cmd}")
                    if made and made.is_dir() and (made / name).is_file():
                        return made / name
            return None
        return None  # checkpoint, dir: no valid one is needed

    def random_bytes(self, path: Path, n=4096) -> Path:
        path.write_bytes(bytes(self.rng.getrandbits(8) for _ in range(n)))
        return path

    def mutations(self, kind: str, case_dir: Path):
        """Yield (name, path, expect) for the bad variants of an input of this kind."""
        valid = self.valid(kind)
        is_dir = kind == "dir" or bool(valid and valid.is_dir())
        suffix = "".join(valid.suffixes[-1:]) if valid and valid.is_file() else ""
        d = case_dir
        d.mkdir(parents=True, exist_ok=True)

        def sidecars(name: str) -> Path:
            """A path for a mutated copy of ``valid``, with copies of its sidecars (X.json or a folder X.pairs beside
            X)."""
            target = d / name / (valid.name if valid else f"input{suffix}")
            target.parent.mkdir(parents=True, exist_ok=True)
            if valid and valid.is_file():
                for side in valid.parent.glob(valid.name + ".*"):
                    if side.name.endswith(".checkpoint.pt"):  # the run's own checkpoint: no reader needs it
                        continue
                    copy = shutil.copytree if side.is_dir() else shutil.copy
                    copy(side, target.parent / side.name)
            return target

        text = kind == "text"
        yield "missing", d / "no-such-folder" / f"missing{suffix}", "refuse"
        if is_dir:
            (d / "empty-dir").mkdir()
            yield "empty", d / "empty-dir", "refuse"
            yield "file-not-dir", self.random_bytes(d / "a-file"), "refuse"
            if valid:
                garbled = d / "random" / valid.name
                shutil.copytree(valid, garbled)
                files = [p for p in garbled.rglob("*") if p.is_file()]
                for p in files:
                    self.random_bytes(p, max(16, min(p.stat().st_size, 65536)))
                yield "random", garbled, "refuse"
                cut = d / "truncated" / valid.name
                shutil.copytree(valid, cut)
                files = sorted((p for p in cut.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
                if files:
                    files[-1].write_bytes(files[-1].read_bytes()[: files[-1].stat().st_size // 2])
                    yield "truncated", cut, "refuse"
            else:
                junk = d / "junk-dir"
                junk.mkdir()
                self.random_bytes(junk / "junk.bin")
                yield "random", junk, "refuse"
            return
        empty = sidecars("empty")
        empty.write_bytes(b"")
        yield "empty", empty, "refuse"
        yield "random", self.random_bytes(sidecars("random")), "refuse-or-warn" if text else "refuse"
        if valid:
            cut = sidecars("truncated")
            data = valid.read_bytes()
            cut.write_bytes(data[: len(data) // 2])
            # half a text is a shorter text; half a CSV is fewer rows, or a last row cut mid-number
            yield "truncated", cut, "run" if text else "either" if kind == "csv" else "refuse"
        wrong = sidecars("wrong-kind")
        if kind == "image":
            ckpt = self.valid("product:gates train")
            if ckpt:
                shutil.copy(ckpt, wrong)
            else:
                wrong.write_text("not an image\n")
        else:
            _png(wrong)
        yield "wrong-kind", wrong, "refuse-or-warn" if text else "refuse"
        folder = d / "a-folder" / (valid.name if valid else f"input{suffix}")
        folder.mkdir(parents=True)
        yield "folder", folder, "refuse"
        if kind == "image":
            yield "bomb", _png_bomb(sidecars("bomb")), "refuse"
        if kind.startswith("json:"):
            p = sidecars("wrong-json")
            p.write_text("[1, 2, 3]\n")
            yield "wrong-json", p, "refuse"
        if valid and valid.suffix == ".safetensors":
            for how in ("renamed-tensor", "bad-config"):
                p = sidecars(how)
                if _edit_safetensors(valid, p, how):  # an edited field may be a record only, not used to rebuild
                    yield how, p, "refuse" if how == "renamed-tensor" else "either"
        if valid and kind == "product:word2vec train":
            p = sidecars("header-lie")
            if _edit_word2vec_header(valid, p):
                yield "header-lie", p, "refuse"


# ---------------------------------------------------------------------------------------------- running


def _run_main(argv: list[str]) -> int:
    """What ``python -m gatelab ARGV`` does, inside a forked child."""
    from gatelab.cli import main

    sys.argv = ["gatelab", *argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    return 0 if code is None else int(code)


class Runner:
    """Starts children (forked or ``python -m gatelab``) and collects their exit status and stderr."""

    def __init__(self, spawn: bool, timeout: float, repo: Path):
        self.spawn, self.timeout, self.repo = spawn, timeout, repo
        self.children: dict[int, dict] = {}

    def start(self, argv: list[str], cwd: Path, timeout: float | None = None):
        cwd.mkdir(parents=True, exist_ok=True)
        err = tempfile.TemporaryFile()
        out = tempfile.TemporaryFile()
        if self.spawn:
            env = dict(
                os.environ,
                PYTHONPATH=os.pathsep.join(filter(None, [str(self.repo / "src"), os.environ.get("PYTHONPATH")])),
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "gatelab", *argv],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
            h = {"pid": proc.pid, "proc": proc, "err": err, "out": out, "t0": time.monotonic()}
            h["timeout"] = timeout or self.timeout
            self.children[proc.pid] = h
            return h
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.setsid()
                os.chdir(cwd)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = _run_main(argv)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        h = {
            "pid": pid,
            "proc": None,
            "err": err,
            "out": out,
            "t0": time.monotonic(),
            "timeout": timeout or self.timeout,
        }
        self.children[pid] = h
        return h

    def poll(self, h) -> tuple[int | None, bool]:
        """(status, timed_out): status is the exit code, -signal for a signal, None while running."""
        if h["proc"] is not None:
            rc = h["proc"].poll()
        else:
            pid, st = os.waitpid(h["pid"], os.WNOHANG)
            rc = None if pid == 0 else (os.waitstatus_to_exitcode(st))
        if rc is None and time.monotonic() - h["t0"] > h["timeout"]:
            self.kill(h)
            return None, True
        if rc is not None:
            self.children.pop(h["pid"], None)
        return rc, False

    def kill(self, h) -> None:
        """End a child and everything it started (its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(h["pid"], signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            h["proc"].wait() if h["proc"] is not None else os.waitpid(h["pid"], 0)
        self.children.pop(h["pid"], None)

    def kill_all(self) -> None:
        for h in list(self.children.values()):
            self.kill(h)

    def finish(self, h) -> tuple[str, str, float]:
        seconds = time.monotonic() - h["t0"]
        texts = []
        for f in (h["err"], h["out"]):
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
            f.close()
        return texts[0], texts[1], seconds

    def run(self, argv: list[str], cwd: Path) -> tuple[int | None, bool, str, str, float]:
        h = self.start(argv, cwd)
        while True:
            rc, timed_out = self.poll(h)
            if rc is not None or timed_out:
                err, out, seconds = self.finish(h)
                return rc, timed_out, err, out, seconds
            time.sleep(0.05)


class InProcessRunner:
    """Runs ``gatelab.cli.main(argv)`` in this process (for the test suite): same answers as ``Runner.run``."""

    def run(self, argv: list[str], cwd: Path) -> tuple[int | None, bool, str, str, float]:
        cwd.mkdir(parents=True, exist_ok=True)
        err, out, here, t0 = io.StringIO(), io.StringIO(), os.getcwd(), time.monotonic()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = _run_main(argv)
        finally:
            os.chdir(here)
        return code, False, err.getvalue(), out.getvalue(), time.monotonic() - t0


def classify(case: Case, rc: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out:
        if case.bad_out:
            return "TIMEOUT"
        if case.expect in ("run", "either"):
            return "ACCEPTED"
        return "NONSENSE" if case.kind.startswith("num:") else "TIMEOUT"
    if "Traceback" in stderr or rc not in (0, 2, 130, 143):
        return "TRACEBACK"
    if rc == 0:
        if case.expect in ("run", "either"):
            return "ACCEPTED"
        if case.expect == "refuse-or-warn" and re.search(r"warn", stderr, re.I):
            return "WARNED"
        return "NONSENSE"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc == 2 and len(lines) == 1 and lines[0].startswith("gatelab"):
        return "OK"
    if rc == 2:
        return "MULTILINE"
    return "OK" if len(lines) == 1 else "MULTILINE"  # 130/143: interrupted, one line expected too


# ---------------------------------------------------------------------------------------------- the probe


class Probe:
    def __init__(self, args):
        from gatelab.cli import build_parser

        self.args = args
        self.repo = Path(__file__).resolve().parents[1]
        self.work = Path(args.work or tempfile.mkdtemp(prefix="gatelab-probe-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.commands = dict(leaf_commands(build_parser()))
        self.runner = Runner(args.spawn, args.timeout, self.repo)
        self.fixtures = Fixtures(self.work / "fixtures", self)
        self.baseline_ok: dict[str, bool | None] = {}
        self.mounts: dict[str, str] = {}
        self._products: dict[str, Path | None] = {}
        self._producing: set[str] = set()
        self._n = 0

    # -- mounts
    def mount(self) -> None:
        ro, full = self.work / "readonly", self.work / "full"
        for d in (ro, full):
            d.mkdir(exist_ok=True)
        for name, d, opts in (("readonly", ro, "size=1m,ro"), ("full", full, "size=64k")):
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
            if r.returncode == 0:
                self.mounts[name] = str(d)
            else:
                self.mounts[name + "_error"] = (r.stderr or r.stdout).strip() or f"mount exit {r.returncode}"
        if "full" in self.mounts:
            with contextlib.suppress(OSError), open(full / "filler", "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        if "readonly" in self.mounts:  # root ignores permission bits; make sure the mount really refuses
            try:
                (ro / "x").write_bytes(b"x")
                self.mounts["readonly_error"] = "the read-only mount accepted a write"
                del self.mounts["readonly"]
            except OSError:
                pass

    def unmount(self) -> None:
        for name in ("readonly", "full"):
            if name in self.mounts:
                subprocess.run(["umount", self.mounts[name]], capture_output=True)

    # -- argument vectors
    def _actions(self, command: str):
        return [a for a in self.commands[command]._actions if not isinstance(a, argparse._HelpAction)]

    def settings(self, command: str, long: bool = False, skip=()) -> list[str]:
        argv = []
        opts = {s: a for a in self._actions(command) for s in a.option_strings}
        table = {**CHEAP, **CHEAP_FOR.get(command, {}), **(LONG if long else {})}
        for flag, value in table.items():
            a = opts.get(flag)
            if a is None or a in skip or _opt(a) in argv:
                continue
            if value == "":
                continue
            if value is None:
                if a.nargs == 0:
                    argv.append(flag)
            elif a.nargs != 0:
                argv += [flag, value]
        return argv

    def baseline(self, command: str, out_dir: Path, long: bool = False, skip=(), replace=None) -> list[str] | None:
        """A valid, cheap command line; required inputs come from fixtures, outputs go under ``out_dir``.

        ``replace`` is ``(action, value)``: that argument gets ``value`` instead (a positional in its place).
        """
        target, value_for_target = replace or (None, None)
        options, positional = [], []
        for a in self._actions(command):
            if a in skip or isinstance(a, argparse._VersionAction):
                continue
            if a is target:
                (
                    options.extend([_opt(a), value_for_target])
                    if a.option_strings
                    else positional.append(value_for_target)
                )
                continue
            if command == "reproduce" and a.dest == "names":  # a name from the registry, and its quick setting
                positional.append(self._reproduce_names()[0])
                options.append("--quick")
                continue
            required = a.required or not a.option_strings and a.nargs not in ("?", "*")
            if not required:
                continue
            if is_output(a):
                value = str(out_dir / ("out" if output_kind(a) == "dir" else f"out{self._out_suffix(a)}"))
            else:
                kind = input_kind(command, a, self.commands)
                path = self.fixtures.valid(kind) if kind else None
                if path is None:
                    return None
                value = str(path)
            (options.extend([_opt(a), value]) if a.option_strings else positional.append(value))
        skip = [*skip, *([target] if target is not None else [])]
        return [*command.split(), *options, *self.settings(command, long, skip), *positional]

    def suffix_for(self, kind: str) -> str:
        """The file extension an input of this kind has, without making it."""
        if kind.startswith("product:"):
            if "+" in kind:  # a sidecar folder
                return ""
            outs = [a for a in self._actions(kind.split(":", 1)[1]) if a.dest == "out"]
            return self._out_suffix(outs[0]) if outs and output_kind(outs[0]) == "file" else ""
        suffixes = {"image": ".png", "text": ".txt", "docword": ".txt", "csv": ".csv", "checkpoint": ".pt"}
        suffixes |= {"skeleton": ".npz", "video": ".mp4"}
        return suffixes.get(kind, ".json" if kind.startswith("json:") else "")

    @staticmethod
    def _out_suffix(action) -> str:
        """The file extension the option's default or help names ("gated.safetensors", "output .pt path")."""
        if action.default and Path(str(action.default)).suffix:
            return Path(str(action.default)).suffix
        m = re.search(r"(?:^|\s)(\.\w+)\b", action.help or "")
        return m.group(1) if m else ""

    def produce(self, command: str, root: Path) -> Path | None:
        """Run ``command`` once with the cheapest settings; return what it wrote to --out."""
        if command in self._products:
            return self._products[command]
        if command in self._producing:
            return None
        self._producing.add(command)
        outs = [a for a in self._actions(command) if a.dest == "out"]
        product = None
        if outs:
            kind = output_kind(outs[0])
            target = root / command.replace(" ", "-") / ("out" if kind == "dir" else f"out{self._out_suffix(outs[0])}")
            argv = self.baseline(command, target.parent, skip=outs)
            if argv is not None:
                argv += ["--out", str(target)]
                rc, timed_out, err, _, seconds = self.runner.run(argv, target.parent)
                ok = rc == 0 and target.exists()
                self.fixtures.notes[command] = (
                    f"fixture {'made' if ok else 'FAILED'} in {seconds:.1f}s: python -m gatelab {shlex.join(argv)}"
                    + ("" if ok else f" -> rc={rc} timed_out={timed_out}: {err.strip()[-300:]}")
                )
                product = target if ok else None
        self._producing.discard(command)
        self._products[command] = product
        return product

    # -- cases
    def cases(self, command: str) -> list[Case]:
        cases: list[Case] = []
        case_root = self.work / "inputs" / command.replace(" ", "-")

        def add(target, kind, argv, expect, bad_out=False, note=""):
            if argv is None:
                cases.append(Case(command, target, kind, command.split(), expect, bad_out, "SKIPPED", note=note))
            else:
                cases.append(Case(command, target, kind, argv, expect, bad_out, note=note))

        def with_value(action, value, long=False):
            """The baseline with ``action`` set to ``value``."""
            return self.baseline(command, self.work / "runs" / "{case}", long=long, replace=(action, value))

        base = self.baseline(command, self.work / "runs" / "{case}")
        add("-", "baseline", base, "run", note="" if base else "no valid input could be made")

        for a in self._actions(command):
            if isinstance(a, argparse._VersionAction) or a.nargs == 0:
                continue
            name = _opt(a)
            if is_output(a):
                kind = output_kind(a)
                suffix = "" if kind == "dir" else self._out_suffix(a)
                regular = self.fixtures.random_bytes(self.work / "regular-file")
                existing = (self.work / "existing-folder") if kind == "file" else regular
                (self.work / "existing-folder").mkdir(exist_ok=True)
                targets = {
                    "out:readonly": (Path(self.mounts["readonly"]) / f"out{suffix}")
                    if "readonly" in self.mounts
                    else None,
                    "out:through-file": regular / f"out{suffix}",
                    "out:wrong-kind": existing,
                    "out:empty-string": "",
                    "out:full-disk": (Path(self.mounts["full"]) / f"out{suffix}") if "full" in self.mounts else None,
                }
                for k, path in targets.items():
                    if path is None:
                        add(name, k, None, "refuse", True, note=f"mount failed: {self.mounts.get(k[4:] + '_error')}")
                        continue
                    add(name, k, with_value(a, str(path), long=k != "out:full-disk"), "refuse", True)
                continue
            num = number_kind(a)
            if num:
                huge = "1" + "0" * 30 if num == "int" else "1e30"
                for value in ("0", "-1", "nan", "inf", huge):
                    add(
                        name,
                        f"num:{'1e30' if value == huge else value}",
                        with_value(a, value),
                        self._expect(command, a, value),
                    )
                continue
            if a.choices:
                continue
            if a.dest == "device":
                for value in ("bogus", "cuda:9"):
                    add(name, f"device:{value}", with_value(a, value), "refuse")
                continue
            kind = input_kind(command, a, self.commands)
            for value in ENCODED_NUMBERS.get(f"{command}:{a.dest}", []):
                add(name, f"encoded:{value}", with_value(a, value), "refuse")
            if kind is None:
                if a.dest in FREE_TEXT:
                    continue
                add(name, "bogus", with_value(a, "bogus-value"), "refuse")
                continue
            for mut, path, expect in self.fixtures.mutations(kind, case_root / a.dest):
                if a.dest == "data_dir":
                    expect = "either"  # a command may not need the data folder (word2vec train on a file corpus)
                add(name, mut, with_value(a, str(path)), expect)
        return cases

    def _reproduce_names(self):
        from gatelab.reproduce import available

        return list(available())

    def _expect(self, command: str, action, value: str) -> str:
        mod = getattr(action.type, "__module__", "")
        if mod == "gatelab.options":
            try:
                action.type(value)
            except Exception:
                return "refuse"
            if value in ("0", "-1"):
                return "run"
        dest = action.dest
        if value in ("-1", "nan", "inf"):
            return "refuse"
        ok = ZERO_OK if value == "0" else HUGE_OK
        return "run" if dest in ok or f"{command}:{dest}" in ok else "refuse"

    # -- the run
    def run(self, commands: list[str]) -> list[Case]:
        self.mount()
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            all_cases = []
            for command in commands:
                all_cases += self.cases(command)
            if not self.args.in_domain:
                for c in all_cases:
                    if c.kind.startswith("num:") and c.expect == "run":
                        c.status, c.note = "SKIPPED", "a value in the option's domain (--in-domain runs it)"
            self._execute(all_cases)
            return all_cases
        finally:
            self.runner.kill_all()
            self.unmount()
            signal.signal(signal.SIGTERM, previous)

    def _execute(self, cases: list[Case]) -> None:
        queue = [c for c in cases if c.status != "SKIPPED"]
        slow = set()  # commands whose baseline did not finish: full-disk cases cannot tell anything
        running: list[tuple[Case, dict, Path]] = []
        jobs = max(1, self.args.jobs)
        total, done = len(queue), 0
        # baselines first, so that full-disk cases of slow commands can be skipped
        queue.sort(key=lambda c: c.kind != "baseline")
        while queue or running:
            while queue and len(running) < jobs:
                case = queue.pop(0)
                if case.kind == "out:full-disk" and case.command in slow:
                    case.status, case.note = "SKIPPED", "the baseline does not finish within the timeout"
                    continue
                if case.kind != "baseline" and any(
                    c.command == case.command and c.kind == "baseline" for c, _, _ in running
                ):
                    queue.insert(0, case)
                    break
                self._n += 1
                cwd = self.work / "runs" / f"{self._n:04d}"
                case.argv = [v.replace("{case}", f"{self._n:04d}") for v in case.argv]
                timeout = self.args.out_timeout if case.bad_out and case.kind != "out:full-disk" else None
                running.append((case, self.runner.start(case.argv, cwd, timeout), cwd))
            for item in list(running):
                case, h, cwd = item
                rc, timed_out = self.runner.poll(h)
                if rc is None and not timed_out:
                    continue
                running.remove(item)
                err, _, seconds = self.runner.finish(h)
                case.rc, case.seconds, case.stderr = rc, round(seconds, 2), err[-2000:]
                case.status = classify(case, rc, timed_out, err)
                if timed_out:
                    case.note = f"still running after {h['timeout']:g}s"
                if case.kind == "baseline":
                    self.baseline_ok[case.command] = rc == 0
                    if timed_out:
                        slow.add(case.command)
                    if rc not in (0, None):
                        case.status, case.note = "SKIPPED", f"BASELINE FAILED rc={rc}: {err.strip()[-300:]}"
                done += 1
                if not self.args.quiet:
                    print(f"[{done}/{total}] {case.status:9s} {case.seconds:5.1f}s {case.line}", file=sys.stderr)
                if not self.args.keep:
                    shutil.rmtree(cwd, ignore_errors=True)
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------- report


def report(cases: list[Case], probe: Probe) -> str:
    buf = io.StringIO()
    w = buf.write
    commands = list(dict.fromkeys(c.command for c in cases))
    for command in commands:
        mine = [c for c in cases if c.command == command]
        counts = {s: sum(c.status == s for c in mine) for s in STATUSES}
        w(f"\n== {command}: {len(mine)} cases, " + ", ".join(f"{s} {n}" for s, n in counts.items() if n) + "\n")
        w(f"{'status':9s} {'target':18s} {'kind':18s} {'rc':>4s} {'sec':>5s}  stderr (last line) / note\n")
        for c in mine:
            last = ([ln for ln in c.stderr.splitlines() if ln.strip()] or [""])[-1][:110]
            w(f"{c.status:9s} {c.target:18s} {c.kind:18s} {str(c.rc):>4s} {c.seconds:5.1f}  {c.note or last}\n")
    counted = [c for c in cases if c.kind != "baseline" and c.status != "SKIPPED"]
    totals = {s: sum(c.status == s for c in counted) for s in STATUSES}
    w("\nSUMMARY: " + f"{len(counted)} cases run; " + ", ".join(f"{s} {totals[s]}" for s in STATUSES if s != "SKIPPED"))
    w(f"; SKIPPED {sum(c.status == 'SKIPPED' for c in cases if c.kind != 'baseline')}\n")
    w(f"mounts: {json.dumps(probe.mounts)}\n")
    for note in probe.fixtures.notes.values():
        w(f"{note}\n")
    defects = [c for c in counted if c.status in DEFECTS]
    if defects:
        w(f"\nDEFECTS ({len(defects)}):\n")
        for c in defects:
            lines = [ln for ln in c.stderr.splitlines() if ln.strip()]
            why = lines[-1][:200] if lines else c.note
            w(f"{c.status:9s} [{c.command} {c.target} {c.kind}] {c.line}\n          -> rc={c.rc} {why}\n")
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--commands", default="", help="comma-separated command prefixes, e.g. gates,lm,'nice train' (default: all)"
    )
    p.add_argument("--json", default=None, help="also write every case and its result to this JSON file")
    p.add_argument("--jobs", type=int, default=1, help="cases run at the same time (default: 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is killed (default: 60)")
    p.add_argument(
        "--out-timeout",
        type=float,
        default=15.0,
        help="seconds within which a bad output path (with --epochs 1000) must be refused (default: 15)",
    )
    p.add_argument("--in-domain", action="store_true", help="also run numbers in the option's domain (0 for --seed)")
    p.add_argument("--spawn", action="store_true", help="run `python -m gatelab` per case instead of forking (slower)")
    p.add_argument("--work", default=None, help="folder for fixtures and runs (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep each case's working folder")
    p.add_argument("--list", action="store_true", help="list the cases without running them")
    p.add_argument("--quiet", action="store_true", help="no line per case while running")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    probe = Probe(args)
    wanted = [w.strip() for w in args.commands.split(",") if w.strip()]
    commands = [c for c in probe.commands if not wanted or any(c == w or c.startswith(w + " ") for w in wanted)]
    if not commands:
        p.error(f"no command matches {args.commands!r}; commands: {', '.join(probe.commands)}")
    if args.list:
        for command in commands:
            for c in probe.cases(command):
                print(f"{c.expect:14s} {c.line}")
        return 0
    cases = probe.run(commands)
    text = report(cases, probe)
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"mounts": probe.mounts, "cases": [asdict(c) | {"line": c.line} for c in cases]}, indent=1)
        )
    return 1 if any(c.status in DEFECTS for c in cases) else 0


if __name__ == "__main__":
    raise SystemExit(main())
