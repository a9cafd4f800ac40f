"""A sweep's result store: its arguments, one PNG and one parquet row per finished cell, written atomically."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..io import atomic_path, atomic_write_bytes, atomic_write_text
from ..spec import GenerationSpec

if TYPE_CHECKING:
    import pandas as pd


class ResultStore:
    """A sweep's directory: ``sweep.json`` (its arguments), ``images/`` (one PNG per cell), ``results.parquet``,
    and ``request.json`` (the arguments as given, before the model resolved them, which lets a finished
    sweep answer a rerun without loading the model)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.table_path = self.dir / "results.parquet"
        self.request_path = self.dir / "request.json"

    def rows(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.table_path) if self.table_path.exists() else pd.DataFrame()

    def keys(self) -> set[str]:
        """The keys of the finished cells."""
        import pandas as pd

        return set(pd.read_parquet(self.table_path, columns=["cell"])["cell"]) if self.table_path.exists() else set()

    def check(self) -> None:
        """Refuse, before any model loads, a store whose files cannot be read (one StoreError line naming the file)."""
        import pandas as pd

        meta = self.dir / "sweep.json"
        for path, read in ((meta, lambda p: json.loads(p.read_text(encoding="utf-8"))),
                           (self.table_path, lambda p: pd.read_parquet(p, columns=["cell"]))):
            if path.exists():
                try:
                    read(path)
                except Exception as exc:  # JSON's, pyarrow's and the OS's own errors
                    raise StoreError(f"out: {str(path)!r} is unreadable ({str(exc).splitlines()[0][:120]}); "
                                     "delete it, or use another --out") from None

    def open(self, arguments: dict, new: bool = False) -> set[str]:
        """Create or reopen the store for ``arguments``; return the keys of finished cells."""
        meta = self.dir / "sweep.json"
        if meta.exists():
            saved = json.loads(meta.read_text())
            if saved != arguments:
                if not new:
                    changed = sorted(k for k in set(saved) | set(arguments) if saved.get(k) != arguments.get(k))
                    raise StoreError(
                        f"{self.dir} holds a sweep made with other arguments (differs in: {', '.join(changed)}); "
                        "use another --out, or --new to archive it and start again"
                    )
                archive = self.dir / f"archive-{sum(1 for _ in self.dir.glob('archive-*')):03d}"
                archive.mkdir()
                for item in list(self.dir.iterdir()):
                    if not item.name.startswith("archive-"):
                        shutil.move(str(item), archive / item.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta, json.dumps(arguments, indent=2, sort_keys=True))
        return self.keys()

    def remember(self, request: dict) -> None:
        """Record the arguments as given for the arguments :meth:`open` accepted."""
        atomic_write_text(self.request_path, json.dumps(request, indent=2, sort_keys=True))

    def answers(self, request: dict, keys: list[str]) -> bool:
        """Whether this store was made for ``request`` and holds every cell of ``keys``."""
        try:
            saved = json.loads(self.request_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return saved == request and set(keys) <= self.keys()

    def write_image(self, key: str, png: bytes) -> str:
        """Write cell ``key``'s PNG, named after the cell (a rerun replaces it, never adds a second); its path in the store."""
        path = self.dir / "images" / f"{key}.png"
        atomic_write_bytes(path, png)
        return path.relative_to(self.dir).as_posix()

    def append(self, rows: list[dict]) -> None:
        import pandas as pd

        table = pd.concat([self.rows(), pd.DataFrame(rows)], ignore_index=True)
        with atomic_path(self.table_path) as tmp:
            table.to_parquet(tmp, index=False)


def spec_row(spec: GenerationSpec) -> dict:
    """The spec fields a store's row records for an image."""
    return {
        "prompt": spec.prompt, "negative_prompt": spec.negative_prompt, "seed": spec.seed, "steps": spec.steps,
        "guidance": spec.guidance, "sampler": spec.sampler, "width": spec.width, "height": spec.height,
        "clip_skip": spec.clip_skip, "strength": spec.strength, "model": spec.model, "model_hash": spec.model_hash,
    }
