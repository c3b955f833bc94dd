"""Reading the structure of a pickle without unpickling it: no import, no call, no code.

`torch.save` files (a zip whose ``data.pkl`` is a pickle, or the legacy stream of pickles),
Lightning ``.ckpt`` files and DCP ``.metadata`` files are pickles. Unpickling runs whatever
callables the file names, so doctor never does it: :func:`structure` walks the opcodes with
`pickletools.genops` and builds plain containers, with inert stand-ins (`Call`) for every
object that the real unpickler would have built by calling something. A tensor is a `Call` of
``torch._utils._rebuild_tensor_v2`` (and friends); its bytes are never read.

Example:
    >>> import pickle, collections
    >>> data = pickle.dumps({"step": 3, "opt": collections.OrderedDict(lr=0.1)}, protocol=2)
    >>> tree = structure(data)
    >>> tree["step"], tree["opt"]
    (3, {'lr': 0.1})
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from spotsafe.errors import CheckpointError

__all__ = ["Call", "Global", "is_tensor", "read_torch_file", "structure"]

MAX_PICKLE_BYTES = 512 * 1024 * 1024  # a data.pkl holds structure, not tensor bytes
MAX_OPS = 50_000_000  # a model with 100k tensors takes a few million opcodes
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER (pre-zip format)
_DICT_BUILDERS = {("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict")}


@dataclass(frozen=True, slots=True)
class Global:
    """A name the pickle refers to (``module.name``); never imported."""

    module: str
    name: str


@dataclass(eq=False, slots=True)
class Call:
    """What the unpickler would have built by calling ``func(*args)``, inert."""

    func: Any
    args: Any = ()
    state: Any = None
    items: dict[Any, Any] = field(default_factory=dict)
    elements: list[Any] = field(default_factory=list)


def is_tensor(node: Any) -> bool:
    """Whether ``node`` stands for a tensor (or parameter) in a torch pickle.

    Example:
        >>> is_tensor(Call(Global("torch._utils", "_rebuild_tensor_v2")))
        True
    """
    return (
        isinstance(node, Call)
        and isinstance(node.func, Global)
        and node.func.module.startswith("torch")
        and node.func.name.startswith("_rebuild")
    )


class _Mark:
    pass


_MARK = _Mark()


def _key(k: Any) -> Any:
    try:
        hash(k)
    except TypeError:
        return repr(k)
    return k


def _set_items(target: Any, pairs: list[Any]) -> None:
    items = target.items if isinstance(target, Call) else target
    if not isinstance(items, dict):
        raise CheckpointError("malformed pickle: SETITEMS on a non-dict")
    for i in range(0, len(pairs) - 1, 2):
        items[_key(pairs[i])] = pairs[i + 1]


def _append(target: Any, values: list[Any]) -> None:
    if isinstance(target, Call):
        target.elements.extend(values)
    elif isinstance(target, list):
        target.extend(values)
    else:
        raise CheckpointError("malformed pickle: APPENDS on a non-list")


def _reduce(func: Any, args: Any) -> Any:
    if isinstance(func, Global) and (func.module, func.name) in _DICT_BUILDERS:
        return {}  # OrderedDict() / dict(): items follow through SETITEMS
    return Call(func, args)


def structure(source: bytes | IO[bytes]) -> Any:
    """The object a pickle describes, as plain containers and `Call` stand-ins.

    Raises:
        CheckpointError: the bytes are not a pickle this reader understands.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        nonlocal stack
        items = stack
        stack = marks.pop()
        return items

    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(stream)):
            if n > MAX_OPS:
                raise CheckpointError(f"pickle has more than {MAX_OPS} opcodes")
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return stack.pop()
            if name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()  # POP of a MARK
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            elif op.arg is not None and name not in _WITH_ARG:
                stack.append(arg)  # literals: ints, floats, strings, bytes
            elif name in ("EMPTY_LIST",):
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("EMPTY_SET",):
                stack.append(set())
            elif name == "LIST":
                values = pop_mark()  # before naming `stack`: pop_mark rebinds it
                stack.append(values)
            elif name == "TUPLE":
                values = pop_mark()
                stack.append(tuple(values))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(name[-1])
                last = tuple(stack[-k:])
                del stack[-k:]
                stack.append(last)
            elif name == "DICT":
                d: dict[Any, Any] = {}
                _set_items(d, pop_mark())
                stack.append(d)
            elif name == "FROZENSET":
                values = pop_mark()
                stack.append(frozenset(_key(v) for v in values))
            elif name == "APPEND":
                value = stack.pop()
                _append(stack[-1], [value])
            elif name == "APPENDS":
                values = pop_mark()
                _append(stack[-1], values)
            elif name == "SETITEM":
                v = stack.pop()
                k = stack.pop()
                _set_items(stack[-1], [k, v])
            elif name == "SETITEMS":
                pairs = pop_mark()
                _set_items(stack[-1], pairs)
            elif name == "ADDITEMS":
                values = pop_mark()
                if isinstance(stack[-1], set):
                    stack[-1].update(_key(v) for v in values)
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(Global(module, attr))
            elif name == "STACK_GLOBAL":
                attr = stack.pop()
                module = stack.pop()
                stack.append(Global(str(module), str(attr)))
            elif name in ("EXT1", "EXT2", "EXT4"):
                stack.append(Global("<copyreg extension>", str(arg)))
            elif name == "REDUCE":
                args = stack.pop()
                stack.append(_reduce(stack.pop(), args))
            elif name == "NEWOBJ":
                args = stack.pop()
                stack.append(Call(stack.pop(), args))
            elif name == "NEWOBJ_EX":
                kwargs = stack.pop()
                args = stack.pop()
                stack.append(Call(stack.pop(), (args, kwargs)))
            elif name == "OBJ":
                values = pop_mark()
                stack.append(Call(values[0], tuple(values[1:])) if values else None)
            elif name == "INST":
                module, _, attr = str(arg).partition(" ")
                values = pop_mark()
                stack.append(Call(Global(module, attr), tuple(values)))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if isinstance(target, Call):
                    target.state = state
                elif isinstance(target, dict) and isinstance(state, dict):
                    target.update(state)
            elif name == "BINPERSID":
                stack.append(Call(Global("<persistent>", "load"), (stack.pop(),)))
            elif name == "PERSID":
                stack.append(Call(Global("<persistent>", "load"), (arg,)))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(arg))] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(str(arg))])
            elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
                stack.append(Call(Global("<buffer>", name)))
            else:
                raise CheckpointError(f"pickle opcode {name} is not understood")
    except CheckpointError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, EOFError) as e:
        raise CheckpointError(f"not a readable pickle: {e}") from e
    raise CheckpointError("not a readable pickle: it has no STOP")


# Opcodes whose argument is not a literal value to push.
_WITH_ARG = frozenset(
    {"GLOBAL", "INST", "PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET",
     "PERSID", "EXT1", "EXT2", "EXT4", "PROTO", "FRAME"}
)  # fmt: skip


def read_torch_file(source: str | Path | BinaryIO) -> Any:
    """The structure of a `torch.save` file (zip or legacy format), read without unpickling.

    ``source`` is a path or a file open for binary reading (seekable).

    Raises:
        CheckpointError: not a torch.save file, or one too large or malformed to read.
        OSError: it could not be read.

    Example:
        >>> import pickle, tempfile, zipfile
        >>> f = tempfile.NamedTemporaryFile(suffix=".pt", delete=False).name
        >>> with zipfile.ZipFile(f, "w") as z:
        ...     z.writestr("archive/data.pkl", pickle.dumps({"step": 7}, protocol=2))
        >>> read_torch_file(f)
        {'step': 7}
    """
    if not isinstance(source, (str, Path)):
        return _read_torch(source, Path(getattr(source, "name", "<file>")))
    with Path(source).open("rb") as f:  # one open file: a job may rewrite the path meanwhile
        return _read_torch(f, Path(source))


def _read_torch(f: BinaryIO, p: Path) -> Any:
    if zipfile.is_zipfile(f):
        f.seek(0)
        try:
            return _zip_data_pkl(p, zipfile.ZipFile(f))
        except (zipfile.BadZipFile, EOFError) as e:
            raise CheckpointError(f"{p}: a damaged zip file ({e})") from e
    f.seek(0)
    first = structure(f)
    if first != _LEGACY_MAGIC:
        return first  # a plain pickle
    structure(f)  # protocol version
    structure(f)  # system info
    return structure(f)


def _zip_data_pkl(p: Path, z: zipfile.ZipFile) -> Any:
    """The structure of the data.pkl in the torch.save zip ``z`` (read from ``p``)."""
    with z:
        names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise CheckpointError(f"{p}: a zip file without data.pkl: not a torch.save file")
        info = z.getinfo(sorted(names, key=len)[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{p}: data.pkl is {info.file_size} bytes; too large")
        return structure(z.read(info))
