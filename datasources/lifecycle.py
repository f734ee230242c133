"""The one context-manager protocol shared by the objects that hold a connection or session."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosesOnExit:
    """``with obj:`` closes ``obj`` at the end of the block; subclasses define :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
