"""``landmark serve``: the recogniser over HTTP (FastAPI), with a web page.

Endpoints (OpenAPI page at ``/docs``):

* ``POST /v1/recognize[?top_k=3&explain=1]``: images as multipart fields ``file`` or as
  the raw body -> ``{"answers": [Answer, ...]}`` (with ``explain``: saliency overlay and
  inlier matches as PNG ``data:`` URLs);
* ``GET /v1/landmarks``: known landmarks with names and reference photo counts;
* ``GET /v1/references/{photo_id}/thumbnail``: a JPEG thumbnail (at most
  :data:`THUMBNAIL_SIDE` px) of one indexed reference photo, found by its id in the index (the
  ids answers give as ``neighbours`` and ``/v1/retrieve`` returns: the web page shows both as
  pictures); any other id is a 404, and the id never becomes a path;
* ``POST /v1/retrieve[?top_k=10]``: the indexed photos most similar to each uploaded image
  (``landmark retrieve``, :meth:`Recognizer.retrieve`) -> ``{"results": [{source, images}]}``;
* ``POST /v1/landmarks/{landmark_id}/images``: enrol photos into the index
  (``Authorization: Bearer TOKEN``; optional form field ``name``); saved before answering;
* ``GET /health``: what is loaded, the runtime included (``{"name": "onnx", "model": "model.onnx",
  "precision": "fp32"}`` or ``{"name": "torch", "device": "cpu"}``; file names only, no server
  paths); ``GET /``: the web page.

The model is loaded once (by the caller, into the :class:`Recognizer`); all state lives on
``app.state``.  Refusals are 4xx with ``{"error": "..."}``; a request that does not fit in the
memory budget of the requests in flight (:mod:`landmark.serving.budget`) gets 503 with
``Retry-After``.  Uploads are decoded by a pool of ``decoders`` threads and the model runs in
the batcher's one thread, so the number of threads (and of glibc malloc arenas) is bounded.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..data.names import check_name
from ..defaults import TOP_K
from ..inference.recognizer import Answer, Recognizer
from ..retrieval.pipeline import enrol_index
from ..models.runtime_info import runtime_info
from ..retrieval.embeddings import Embeddings
from .batching import Batcher
from .budget import RETRY_AFTER_S, MemoryBudget, needed_bytes
from .settings import DECODERS, MEMORY_BUDGET_MB, check_token
from .uploads import Limits, Refusal, decode_upload, read_images

_LANDMARK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Longest side, in pixels, of the reference thumbnails the web page shows.
THUMBNAIL_SIDE = 256
_PHOTO_ID = re.compile(r"^[^/\\\x00]{1,256}$")   # refused before the index is searched

# request bodies are read by hand (size cap before parsing); these describe them on /docs
_IMAGES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}
_ENROL_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "name": {"type": "string", "description": "the landmark's readable name"}}}}}}}


class PublicNeighbour(BaseModel):
    """A reference photo close to the query (its server path is not shown)."""

    id: str
    landmark_id: str
    name: str
    similarity: float


class Explained(BaseModel):
    """Pictures of ``explain=1`` as ``data:image/png;base64,...`` URLs."""

    saliency: str
    matches: str | None = None
    reference_id: str | None = None
    inliers: int | None = None


class PublicAnswer(Answer):
    """:class:`~landmark.inference.recognizer.Answer` as the API returns it: neighbours without
    server paths, and the pictures of ``explain=1``."""

    neighbours: list[PublicNeighbour] = []
    explain: Explained | None = None


class Recognitions(BaseModel):
    answers: list[PublicAnswer]


class Retrieved(BaseModel):
    """The indexed photos most similar to one uploaded photo, most similar first."""

    source: str
    images: list[PublicNeighbour]


class Retrievals(BaseModel):
    results: list[Retrieved]


class Enrolled(BaseModel):
    landmark_id: str
    name: str
    added: int
    skipped_duplicates: int
    references: int
    threshold: float | None = None   # the landmark's "no landmark" threshold (calibrated when enrolled)
    coverage: dict = {}                 # photos, nearest landmark, coverage good/fair/poor, advice, answers_changed


def create_app(recognizer: Recognizer, token: str | None = None, index_dir: str | Path | None = None,
               limits: Limits | None = None, window: float = 0.010, max_batch: int = 16,
               memory_budget_mb: float = MEMORY_BUDGET_MB, decoders: int = DECODERS) -> FastAPI:
    """The application around a loaded recogniser.

    Args:
        token: enrolment password (``Authorization: Bearer TOKEN``, compared byte for byte);
            None disables enrolment.
        index_dir: folder of ``recognizer.index``; enrolled photos and the index are saved there.
            None: enrolment answers 409 (the index a run folder carries is never written).
        limits: upload limits (:class:`~landmark.serving.uploads.Limits`).
        window, max_batch: micro-batching (:class:`~landmark.serving.batching.Batcher`), seconds / images.
        memory_budget_mb: MB the requests in flight may hold together (bodies, decoded pixels).
        decoders: threads that decode uploads.

    Raises:
        ValueError: an empty or blank token (:func:`~landmark.serving.settings.check_token`), a
            batching window out of range, an ``index_dir`` inside a run folder, a budget below 1 byte.
    """
    check_token(token)
    if index_dir is not None and _in_run_folder(Path(index_dir)):
        raise ValueError(f"{index_dir} belongs to a training run, which the service never changes: copy it "
                         f"(cp -r {index_dir} my-index) and give the copy with --index")
    batcher = Batcher(recognizer, window, max_batch)
    budget = MemoryBudget(int(memory_budget_mb * 2**20))
    if decoders < 1:
        raise ValueError(f"decoders {decoders}: give at least 1")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()
        if app.state.pool is not None:
            app.state.pool.shutdown(wait=False)
            app.state.pool = None

    app = FastAPI(title="landmark", summary="Landmark recognition: one photo in, a named answer out",
                  version="0.1.0", lifespan=lifespan)
    app.state.recognizer, app.state.batcher, app.state.token = recognizer, batcher, token
    app.state.index_dir = Path(index_dir) if index_dir is not None else None
    app.state.limits = limits or Limits()
    app.state.budget, app.state.decoders, app.state.pool = budget, decoders, None   # pool: made on first use
    _add_error_handlers(app)
    _add_routes(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def refused(request: Request, err: Refusal):
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else \
            {"Retry-After": str(RETRY_AFTER_S)} if err.status == 503 else None
        return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()]
        return JSONResponse({"error": "; ".join(parts)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception):   # a JSON body like every other answer, not plain text
        return JSONResponse({"error": f"internal error ({type(err).__name__}); the request was not answered"},
                            status_code=500)


def _add_routes(app: FastAPI) -> None:
    state = app.state

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("landmark.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict:
        """The server answers; what it has loaded."""
        rec = state.recognizer
        return {"status": "ok", "runtime": runtime_info(rec.runtime, paths=False),
                "explain": rec.model is not None,   # saliency needs the PyTorch network (not a bare .onnx)
                "scoring": rec.scoring,
                "threshold": rec.threshold, "classes": len(rec.classes),
                "references": len(rec.index) if rec.index is not None else 0,
                # photos POST /v1/retrieve searches (the --retrieval-index when there is one, else the index)
                "retrievable": (len(rec.retrieval.index) if rec.retrieval is not None
                                else len(rec.index) if rec.index is not None else 0),
                "batches": state.batcher.batches,
                "enrolment": state.token is not None and state.index_dir is not None,
                "memory_budget": {"limit_mb": round(state.budget.limit / 2**20, 1),
                                  "held_mb": round(state.budget.held / 2**20, 1),
                                  "peak_mb": round(state.budget.peak / 2**20, 1), "refused": state.budget.refused}}

    @app.get("/v1/landmarks")
    async def landmarks() -> dict:
        """Known landmarks: id, name, whether the classifier knows it, reference photos in the index."""
        return state.recognizer.describe()

    @app.post("/v1/recognize", response_model=Recognitions, openapi_extra=_IMAGES_BODY)
    async def recognize(request: Request, top_k: int = Query(TOP_K, ge=1, le=20),
                        explain: bool = Query(False, description="add saliency and match pictures (slower)")) -> dict:
        """Recognise the uploaded images (multipart fields ``file``, or the raw body)."""
        if explain and state.recognizer.model is None:
            from ..reporting.explain import EXPLAIN_NEEDS_PYTORCH
            raise Refusal(409, f"explain: {EXPLAIN_NEEDS_PYTORCH}")
        with state.budget.reservation() as held:
            files, _ = await _read(request, state, held)
            photos = await _decode(files, state, held)
            answers = await state.batcher.recognize(photos, [name for name, _ in files], top_k)
            out = []
            for photo, answer in zip(photos, answers):
                item = public(answer)
                if explain:
                    item["explain"] = await _in_pool(state, _explain, state.recognizer, photo, answer)
                out.append(item)
            return {"answers": out}

    @app.get("/v1/references/{photo_id}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "not an indexed photo"}})
    async def thumbnail(photo_id: str) -> Response:
        """A JPEG thumbnail of the indexed reference photo ``photo_id`` (a neighbour's ``id``)."""
        rec = state.recognizer
        # the recogniser's index, then the retrieval index (--retrieval-index) whose ids /v1/retrieve gives
        indexes = [i for i in (rec.index, rec.retrieval.index if rec.retrieval is not None else None) if i is not None]
        path = None
        if _PHOTO_ID.match(photo_id):
            for index in indexes:
                rows = np.flatnonzero(index.items["id"].to_numpy() == photo_id)
                if len(rows):
                    path = index.items["path"].iat[int(rows[0])]
                    break
        if path is None:
            raise Refusal(404, f"no reference photo {photo_id[:80]!r}: ids come from an answer's neighbours or "
                               "from /v1/retrieve")
        jpeg = await _in_pool(state, _thumbnail, path, state.limits.max_pixels)
        if jpeg is None:
            raise Refusal(404, f"reference photo {photo_id[:80]!r} is indexed but its file cannot be read")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/v1/retrieve", response_model=Retrievals, openapi_extra=_IMAGES_BODY)
    async def retrieve(request: Request, top_k: int = Query(10, ge=1, le=100)) -> dict:
        """The indexed photos most similar to each uploaded image (``landmark retrieve``; needs an index)."""
        if state.recognizer.index is None and state.recognizer.retrieval is None:
            raise Refusal(409, "no index loaded: start the server with --index DIR or --retrieval-index DIR "
                               "(landmark index build) to retrieve")
        with state.budget.reservation() as held:
            files, _ = await _read(request, state, held)
            photos = await _decode(files, state, held)
            found = await _in_pool(state, state.recognizer.retrieve, photos, top_k)
            return {"results": [{"source": name, "images": [n.model_dump(exclude={"path"}) for n in near]}
                                for (name, _), near in zip(files, found)]}

    @app.post("/v1/landmarks/{landmark_id}/images", response_model=Enrolled, openapi_extra=_ENROL_BODY)
    async def enrol(request: Request, landmark_id: str) -> dict:
        """Add reference photos of a landmark (new or known) to the index; needs the token.

        Multipart fields ``file`` (one or more) and optionally ``name`` (the landmark's name).
        """
        _authorise(request, state.token)
        if state.index_dir is None or state.recognizer.index is None:
            whose = ("this server answers with the run's own index, which the service never changes"
                     if state.recognizer.index is not None and state.index_dir is None else "no index loaded")
            raise Refusal(409, f"{whose}: start the server with --index DIR (a copy of RUN/index, or one from "
                               f"landmark index build) to enrol photos")
        if not _LANDMARK_ID.match(landmark_id):
            raise Refusal(400, f"landmark id {landmark_id!r}: use letters, digits, '_', '-', '.' (at most 64)")
        with state.budget.reservation() as held:
            files, fields = await _read(request, state, held)
            name = fields.get("name")
            if name is not None:
                try:
                    name = check_name(name)   # at most 200 printable characters: data/names.py
                except ValueError as err:
                    raise Refusal(422, f"name: {err}") from None
            photos = await _decode(files, state, held)
            return await _in_pool(state, _enrol, state, landmark_id, name, photos, [data for _, data in files])


async def _in_pool(state, fn, *args):
    """``fn(*args)`` in the app's bounded thread pool (not anyio's pool of 40 threads)."""
    if state.pool is None:
        state.pool = ThreadPoolExecutor(max_workers=state.decoders, thread_name_prefix="landmark-decode")
    return await asyncio.get_running_loop().run_in_executor(state.pool, fn, *args)


async def _read(request: Request, state, held) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """:func:`read_images` within the memory budget: twice each chunk's length is reserved as
    it arrives -- the chunk and the body it is joined into -- (not the declared length up
    front: 12 clients that declared 20 MB and sent nothing held 480 MB of 512 for as long as
    they kept their connections open), then trimmed to twice the files' bytes."""
    reserved = 0

    def arrived(n: int) -> None:
        nonlocal reserved
        held.take(2 * n, "the upload")
        reserved += 2 * n
    files, fields = await read_images(request, state.limits, arrived)
    held.give_back(reserved - 2 * sum(len(data) for _, data in files))
    return files, fields


async def _decode(files: list[tuple[str, bytes]], state, held) -> list:
    """The uploads decoded in the app's pool, the memory each needs reserved first (from its header)."""
    photos, side = [], state.recognizer.preprocess.resize   # the largest side any view is resized to
    for name, data in files:
        held.take(needed_bytes(data, side), name)
        photos.append(await _in_pool(state, decode_upload, name, data, state.limits.max_pixels,
                                     state.recognizer.draft(1)))
    return photos


def public(answer: Answer) -> dict:
    """An answer as the API returns it: the server's file paths left out."""
    return answer.model_dump(exclude={"neighbours": {"__all__": {"path"}}})


def _explain(rec: Recognizer, photo, answer: Answer) -> dict:
    from ..reporting.explain import data_url, explain
    found = explain(rec, photo, answer)
    return {"saliency": data_url(found.saliency_png), "matches": data_url(found.matches_png),
            "reference_id": found.reference_id, "inliers": found.inliers}


def _authorise(request: Request, token: str | None) -> None:
    """401 without ``Authorization: Bearer ...``, 403 with a wrong token or none configured."""
    if token is None:
        raise Refusal(403, "enrolment is disabled: start the server with --token (or LANDMARK_TOKEN)")
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise Refusal(401, "enrolment needs the header 'Authorization: Bearer TOKEN'")
    # the exact bytes after "Bearer " (HTTP header values arrive as latin-1 text); no stripping,
    # so a non-breaking space is not an empty token
    given = header[7:].encode("latin-1", errors="replace")
    if not hmac.compare_digest(given, token.encode("utf-8")):
        raise Refusal(403, "wrong token")


def _in_run_folder(folder: Path) -> bool:
    """Whether ``folder`` lies in a training run (a ``run.json`` in it or a folder above)."""
    from ..runs import RunFolder
    folder = folder.resolve()
    return any(RunFolder(f).is_run() for f in (folder, *folder.parents))


def _enrol(state, landmark_id: str, name: str | None, photos: list, raw: list[bytes]) -> dict:
    """Embed, store and index the photos, then save the index (under the model lock)."""
    rec, folder = state.recognizer, state.index_dir
    ids = [hashlib.sha256(data).hexdigest()[:16] for data in raw]  # content ids: re-sending skips
    first = {i: k for k, i in reversed(list(enumerate(ids)))}  # the same photo twice in one request: once
    keep = sorted(first.values())
    photos, ids = [photos[k] for k in keep], [ids[k] for k in keep]
    store = (folder / "enrolled").resolve()   # absolute paths in items.csv, whatever the server's directory
    with state.batcher.lock:
        vectors = rec.embed(photos)
        paths = [store / f"{i}.jpg" for i in ids]
        created = not store.exists()
        store.mkdir(parents=True, exist_ok=True)
        written = []   # the photos saved by this request: deleted again when the enrolment is refused or fails
        saved = {}     # the index as saved, once it holds the photos (enrol_index's saved hook)
        try:
            for photo, path in zip(photos, paths):
                if not path.exists():
                    _save_jpeg(photo, path)
                    written.append(path)
            items = pd.DataFrame({"id": ids, "landmark_id": landmark_id, "path": [str(p) for p in paths]})
            emb = Embeddings(np.asarray(vectors, np.float32), items, model=rec.index.meta.get("model"))
            # the one enrolment path (locked, crash-safe; calibrates the landmark's threshold)
            rec.index, result = enrol_index(folder, emb, {landmark_id: name} if name else None, classes=rec.classes,
                                            threshold=rec.threshold, name_of=rec.name, rename=True,
                                            changes=rec.enrolment_changes,
                                            saved=lambda index, added: saved.update(index=index))
        except BaseException as err:
            held = set(saved["index"].items["path"].astype(str)) if saved else set()
            for path in written:
                if str(path) not in held:   # a photo the saved index holds stays (items.csv points at it)
                    path.unlink(missing_ok=True)
            if created and not any(store.iterdir()):
                store.rmdir()
            if saved:   # the index changed, then its report failed: answer over the saved index, no refusal
                rec.index = saved["index"]
                rec.rescore()
                raise
            if isinstance(err, ValueError):   # refused before the index changed: a name alike another's, a bad floor
                raise Refusal(409, str(err)) from None
            raise
        if result["skipped_duplicates"] and written:   # indexed already, from another file: no copy kept
            held = set(rec.index.items["path"].astype(str))
            for path in written:
                if str(path) not in held:
                    path.unlink(missing_ok=True)
        if name and result["added"]:
            rec.names[landmark_id] = name
        rec.rescore()   # the index's counts and enrolled landmarks' thresholds
        references = int((rec.index.items["landmark_id"] == landmark_id).sum())
    coverage = result["landmarks"].get(landmark_id, {})
    return {"landmark_id": landmark_id, "name": rec.name(landmark_id), "added": result["added"],
            "skipped_duplicates": result["skipped_duplicates"], "references": references,
            "threshold": coverage.get("threshold"), "coverage": coverage}


def _thumbnail(path: str, max_pixels: int) -> bytes | None:
    """JPEG bytes of the photo at ``path`` (a path the index holds), at most :data:`THUMBNAIL_SIDE`
    px a side; None when it cannot be read (moved, deleted, not an image)."""
    from ..data import ImageError, load_image
    try:
        photo = load_image(path, draft=THUMBNAIL_SIDE, max_pixels=max_pixels)   # JPEGs decoded at 1/2..1/8 scale
    except (ImageError, OSError):
        return None
    photo.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    photo.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _save_jpeg(photo, path: Path) -> None:
    """The decoded photo re-encoded as JPEG (temp file + rename), at most 1024 px a side."""
    from ..retrieval.verification import shrink
    buf = io.BytesIO()
    shrink(photo, 1024).save(buf, format="JPEG", quality=90)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
