"""Token selections: which token positions of a site hold the neurons."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

__all__ = ["TokenSelection", "TokenSpec"]

TokenSpec = Union[int, str, Sequence[int], "TokenSelection"]


@dataclass(frozen=True)
class TokenSelection:
    """Which token positions of a site hold the neurons.

    ``kind`` is ``"cls"`` (index 0), ``"indices"`` (the explicit ``indices``),
    ``"patches"`` (every token after the ``num_prefix_tokens`` class, distillation
    and register tokens) or ``"all"``. Selected positions are always taken in
    ascending order. A neuron read at several tokens is gated
    at every one of them with a single gate, so its attribution is the sum over
    those tokens.

    Attributes:
        kind (str): ``"cls"``, ``"indices"``, ``"patches"`` or ``"all"``. Default: ``"cls"``.
        indices (tuple of int): The token positions of ``kind="indices"``. Default: ``()``.
        num_prefix_tokens (int): Tokens before the patches (class, distillation and
            register tokens) that ``"patches"`` leaves out. Default: 1.
    """

    kind: str = "cls"
    indices: Tuple[int, ...] = ()
    num_prefix_tokens: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("cls", "indices", "patches", "all"):
            raise ValueError(
                f"tokens kind must be one of 'cls', 'indices', 'patches', 'all'; got {self.kind!r}"
            )
        if self.kind == "indices" and not self.indices:
            raise ValueError("tokens: an explicit token selection needs at least one index")
        if self.num_prefix_tokens < 0:
            raise ValueError(
                f"num_prefix_tokens must be >= 0; got {self.num_prefix_tokens}"
            )

    @classmethod
    def parse(cls, tokens: TokenSpec, num_prefix_tokens: int = 1) -> "TokenSelection":
        """Build a selection from ``"cls"``, ``"patches"``, ``"all"``, an int or a list of ints."""
        if isinstance(tokens, TokenSelection):
            return tokens
        if isinstance(tokens, str):
            if tokens not in ("cls", "patches", "all"):
                raise ValueError(
                    f"tokens must be 'cls', 'patches', 'all', a token index or a list of "
                    f"indices; got {tokens!r}"
                )
            return cls(kind=tokens, num_prefix_tokens=num_prefix_tokens)
        if isinstance(tokens, bool):
            raise TypeError(f"tokens must not be a bool; got {tokens!r}")
        if isinstance(tokens, int):
            return cls(kind="indices", indices=(tokens,), num_prefix_tokens=num_prefix_tokens)
        if isinstance(tokens, Sequence) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            if len(set(tokens)) != len(tokens):
                raise ValueError(f"tokens: indices must be distinct; got {list(tokens)}")
            return cls(
                kind="indices", indices=tuple(int(t) for t in tokens),
                num_prefix_tokens=num_prefix_tokens,
            )
        raise TypeError(
            "tokens must be 'cls', 'patches', 'all', an int or a list of ints; "
            f"got {type(tokens).__name__}"
        )

    def index(self, seq_len: int) -> Union[slice, List[int]]:
        """The positions for a sequence of ``seq_len`` tokens, as a slice or index list."""
        if self.kind == "cls":
            return slice(0, 1)
        if self.kind == "all":
            return slice(0, seq_len)
        if self.kind == "patches":
            if self.num_prefix_tokens >= seq_len:
                raise ValueError(
                    f"tokens='patches' selects nothing: the sequence has {seq_len} tokens "
                    f"and {self.num_prefix_tokens} prefix tokens"
                )
            return slice(self.num_prefix_tokens, seq_len)
        bad = [i for i in self.indices if not -seq_len <= i < seq_len]
        if bad:
            raise ValueError(
                f"token indices {bad} are out of range for a sequence of {seq_len} tokens"
            )
        idx = sorted(i % seq_len for i in self.indices)
        if len(set(idx)) != len(idx):
            raise ValueError(
                f"token indices {list(self.indices)} name the same position twice in a sequence of {seq_len} tokens"
            )
        if idx == list(range(idx[0], idx[-1] + 1)):
            return slice(idx[0], idx[-1] + 1)
        return idx

    def __str__(self) -> str:
        if self.kind == "indices":
            return f"indices{list(self.indices)}"
        if self.kind == "patches":
            return f"patches(after {self.num_prefix_tokens} prefix tokens)"
        return self.kind
