"""Tiny datasets written in the exact upstream formats (GroupLens zips, RecBole, KGAT, TSV).

Generated at test time, so no licensed data is committed; the shapes and encodings follow the
real files byte for byte (``::``-separated Latin-1 for ML-1M, ``|``-separated u.item, ...).
"""

from __future__ import annotations

import hashlib
import io
import zipfile

ML1M_MOVIES = [
    (1, "Toy Story (1995)", "Animation|Children's|Comedy"),
    (2, "Jumanji (1995)", "Adventure|Children's|Fantasy"),
    (11, "American President, The (1995)", "Comedy|Drama|Romance"),
    (25, "Cité des enfants perdus, La (1995)", "Adventure|Sci-Fi"),
    (50, "Usual Suspects, The (1995)", "Crime|Thriller"),
    (99, "Never Rated (1999)", "Drama"),
]
ML1M_USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072"), (3, "M", 25, 15, "55117")]


def ml1m_ratings(n_users: int = 3, items=(1, 2, 11, 25, 50)) -> list[tuple[int, int, int, int]]:
    rows = []
    for user in range(1, n_users + 1):
        for k, item in enumerate(items):
            rows.append((user, item, 1 + (user + k) % 5, 978300000 + 10 * user + k))
    return rows


def ml1m_files(ratings=None) -> dict[str, bytes]:
    ratings = ratings if ratings is not None else ml1m_ratings()
    return {
        "ml-1m/ratings.dat": "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings).encode("latin-1"),
        "ml-1m/movies.dat": "".join(f"{m}::{t}::{g}\n" for m, t, g in ML1M_MOVIES).encode("latin-1"),
        "ml-1m/users.dat": "".join(f"{u}::{g}::{a}::{o}::{z}\n" for u, g, a, o, z in ML1M_USERS).encode("latin-1"),
        "ml-1m/README": b"MovieLens 1M fixture\n",
    }


def ml100k_files(n_users: int = 4, n_items: int = 6) -> dict[str, bytes]:
    data = "".join(
        f"{u}\t{i}\t{1 + (u * i) % 5}\t{881250949 + u * 100 + i}\n"
        for u in range(1, n_users + 1)
        for i in range(1, n_items + 1)
        if (u + i) % 7 != 0
    )
    flags = lambda k: "|".join("1" if j == k % 19 else "0" for j in range(19))  # noqa: E731
    item = "".join(
        f"{i}|Movie {i} (199{i % 10})|01-Jan-199{i % 10}||http://us.imdb.com/M/title-exact?Movie%20{i}|{flags(i)}\n"
        for i in range(1, n_items + 1)
    )
    user = "".join(f"{u}|{20 + u}|{'MF'[u % 2]}|technician|8571{u}\n" for u in range(1, n_users + 1))
    return {
        "ml-100k/u.data": data.encode(),
        "ml-100k/u.item": item.encode("latin-1"),
        "ml-100k/u.user": user.encode(),
        "ml-100k/README": b"fixture\n",
    }


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in files.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def grouplens_md5(name: str, payload: bytes) -> bytes:
    """GroupLens' .md5 files are in BSD format: ``MD5 (ml-1m.zip) = <hex>``."""
    return f"MD5 ({name}) = {hashlib.md5(payload).hexdigest()}\n".encode()


def kgat_files(n_users: int = 5, n_items: int = 8) -> dict[str, bytes]:
    """KGAT release: train/test 'user item item ...' lines over list indices, and the lists."""
    train, test = [], []
    for u in range(n_users):
        items = [(u + k) % n_items for k in range(5)]
        train.append(" ".join(map(str, [u, *items[:4]])))
        test.append(" ".join(map(str, [u, items[4]])))
    item_list = ["org_id remap_id freebase_id"] + [
        f"{1000000000 + i:010d} {i} {'m.0' + format(i, 'x') if i % 4 else 'non'}" for i in range(n_items)
    ]
    user_list = ["org_id remap_id"] + [f"A{u:05d}REVIEWER {u}" for u in range(n_users)]
    return {
        "train.txt": ("\n".join(train) + "\n").encode(),
        "test.txt": ("\n".join(test) + "\n").encode(),
        "item_list.txt": ("\n".join(item_list) + "\n").encode(),
        "user_list.txt": ("\n".join(user_list) + "\n").encode(),
    }


def offline_run_config() -> dict:
    """Run config for the stages after ingest/KG in tests: no network, small and fast.

    Media offline (poster URLs recorded, text from local metadata or titles), text features
    from the packaged MiniLM encoder, no image encoder (there are no poster files offline).
    """
    return {
        "ops": {
            "item_media": {"config": {"offline": True}},
            "clip_features": {"config": {"image_model": "none", "text_model": "minilm"}},
            # A few epochs of a small full model: the point is the wiring, not the accuracy.
            "trained_model": {"config": {"variant": "full", "epochs": 2, "batch_size": 256, "n_blocks": 1,
                                         "n_heads": 2, "seq_len": 8, "eval_chunk": 64}},
        }
    }
