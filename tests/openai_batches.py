"""OpenAI's Files and Batch APIs for the loopback server (`tests/openai_server.py`), enough for
LiteLLM's `create_file`, `create_batch`, `retrieve_batch`, `file_content` and `cancel_batch`
(through the openai SDK) to work against it as against OpenAI:

- `POST /v1/files` (multipart: `purpose`, `file`) -> a file object; `GET /v1/files/{id}/content`;
- `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window`, `metadata`) -> a batch in
  `validating`; it turns `in_progress` and then `completed` after `batch_delay` seconds, its output
  file holding one line per item (`custom_id`, `response.status_code`, `response.body`), its error
  file the items that failed (`fail_rate` of them, seeded, or scripted actions);
- `GET /v1/batches/{id}`, `GET /v1/batches`, `POST /v1/batches/{id}/cancel`.

Each item is answered by the same `Behaviour` as online requests (`auto_answer`, scripted actions),
so a batch run and an online run against the same server give the same replies. Every upload and
submission is logged (`BatchStore.log`, and through `on_event` into the server's log file), so a test
sees how many batches were submitted. `expire(batch_id, keep=n)` ends a batch as OpenAI ends one that
ran out of its window: the first `n` items answered, the others in the error file as `batch_expired`.

`python tests/openai_batches.py run-batch -i requests.jsonl -o results.jsonl` stands in for vLLM's
`python -m vllm.entrypoints.openai.run_batch`: it reads an OpenAI batch input file and writes one
result line per request in vLLM's output shape, each answered by the loopback server's logic
(`--url` sends each body to a running loopback server instead).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import time
import uuid
from typing import Any


class BatchStore:
    """Files and batches held in memory by one server."""

    def __init__(self, *, batch_delay: float = 0.0, fail_rate: float = 0.0, seed: int = 0,
                 create_hold: float = 0.0, on_event=None):
        self.create_hold = create_hold
        self.on_event = on_event
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_delay = batch_delay
        self.fail_rate = fail_rate
        self._rng = random.Random(seed)
        self.log: list[dict[str, Any]] = []

    def event(self, entry: dict[str, Any]) -> None:
        self.log.append(entry)
        if self.on_event is not None:
            self.on_event(entry)

    def add_file(self, data: bytes, *, filename: str, purpose: str) -> dict[str, Any]:
        fid = f"file-{uuid.uuid4().hex[:16]}"
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[fid] = obj
        self.contents[fid] = data
        return obj

    def create_batch(self, body: dict[str, Any], answer) -> dict[str, Any]:
        fid = body.get("input_file_id")
        if fid not in self.contents:
            return {"error": {"message": f"no such file {fid}", "type": "invalid_request_error"}, "_status": 404}
        bid = f"batch_{uuid.uuid4().hex[:16]}"
        out_lines, err_lines, failed = [], [], 0
        lines = [ln for ln in self.contents[fid].decode("utf-8").splitlines() if ln.strip()]
        for line in lines:
            item = json.loads(line)
            rid = f"batch_req_{uuid.uuid4().hex[:12]}"
            if self.fail_rate and self._rng.random() < self.fail_rate:
                err_lines.append({"id": rid, "custom_id": item["custom_id"], "response": None,
                                  "error": {"code": "server_error", "message": "the item failed"}})
                failed += 1
                continue
            status, payload = answer(item["body"])
            line_out = {"id": rid, "custom_id": item["custom_id"],
                        "response": {"status_code": status, "request_id": rid, "body": payload}, "error": None}
            if status >= 400:
                err_lines.append(line_out)
                failed += 1
            else:
                out_lines.append(line_out)
        now = int(time.time())
        out_id = self.add_file("".join(json.dumps(x) + "\n" for x in out_lines).encode(), filename="output.jsonl",
                               purpose="batch_output")["id"]
        err_id = (self.add_file("".join(json.dumps(x) + "\n" for x in err_lines).encode(), filename="errors.jsonl",
                                purpose="batch_output")["id"] if err_lines else None)
        batch = {"id": bid, "object": "batch", "endpoint": body.get("endpoint", "/v1/chat/completions"),
                 "errors": None, "input_file_id": fid, "completion_window": body.get("completion_window", "24h"),
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata"), "_ready_at": time.time() + self.batch_delay,
                 "_result": (out_id, err_id, len(lines) - failed, failed)}
        self.batches[bid] = batch
        self.event({"event": "batch", "id": bid, "input_file_id": fid, "items": len(lines),
                    "metadata": body.get("metadata"), "t": time.time()})
        return self._public(batch)

    def _advance(self, batch: dict[str, Any]) -> None:
        if batch["status"] in ("completed", "cancelled", "failed", "expired"):
            return
        if time.time() >= batch["_ready_at"]:
            out_id, err_id, ok, failed = batch["_result"]
            batch.update(status="completed", output_file_id=out_id, error_file_id=err_id,
                         completed_at=int(time.time()),
                         request_counts={"total": ok + failed, "completed": ok, "failed": failed})
        else:
            batch.update(status="in_progress", in_progress_at=batch["in_progress_at"] or int(time.time()))

    def _public(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def get(self, bid: str) -> dict[str, Any] | None:
        batch = self.batches.get(bid)
        if batch is None:
            return None
        self._advance(batch)
        return self._public(batch)

    def expire(self, bid: str, *, keep: int = 0) -> None:
        """End batch `bid` as expired: its first `keep` items answered, the rest in the error file
        with code ``batch_expired`` (what OpenAI does when a batch runs out of its window)."""
        batch = self.batches[bid]
        out_id, err_id, _, _ = batch["_result"]
        lines = [json.loads(x) for x in self.contents[out_id].decode().splitlines() if x.strip()]
        errors = [json.loads(x) for x in self.contents[err_id].decode().splitlines()] if err_id else []
        kept, lost = lines[:keep], lines[keep:]
        errors += [{"id": x["id"], "custom_id": x["custom_id"], "response": None,
                    "error": {"code": "batch_expired", "message": "This request could not be executed before the "
                              "completion window expired."}} for x in lost]
        out_id = self.add_file("".join(json.dumps(x) + "\n" for x in kept).encode(), filename="output.jsonl",
                               purpose="batch_output")["id"]
        err_id = self.add_file("".join(json.dumps(x) + "\n" for x in errors).encode(), filename="errors.jsonl",
                               purpose="batch_output")["id"]
        batch.update(status="expired", output_file_id=out_id, error_file_id=err_id, expired_at=int(time.time()),
                     request_counts={"total": len(kept) + len(errors), "completed": len(kept),
                                     "failed": len(errors)})

    def cancel(self, bid: str) -> dict[str, Any] | None:
        batch = self.batches.get(bid)
        if batch is None:
            return None
        if batch["status"] not in ("completed", "failed", "expired"):
            batch.update(status="cancelled", cancelled_at=int(time.time()))
        return self._public(batch)


def parse_multipart(headers: dict[str, str], raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    head = f"Content-Type: {headers.get('content-type', '')}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + raw)
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


def is_route(path: str) -> bool:
    """Whether `path` is one of the Files/Batches routes."""
    parts = path.split("?", 1)[0].rstrip("/").split("/")
    return "files" in parts or "batches" in parts


def route(store: BatchStore, method: str, path: str, headers: dict[str, str], raw: bytes,
          answer) -> tuple[int, bytes, str, float] | None:
    """The reply to a Files/Batches request as (status, body, content type, seconds to hold it), or
    None when `path` is not one of these routes."""
    out = _route(store, method, path, headers, raw, answer)
    if out is None:
        return None
    hold = store.create_hold if method == "POST" and path.split("?", 1)[0].rstrip("/").endswith("/batches") else 0.0
    return (*out, hold)


def _route(store: BatchStore, method: str, path: str, headers: dict[str, str], raw: bytes,
           answer) -> tuple[int, bytes, str] | None:
    p = path.split("?", 1)[0].rstrip("/")
    parts = p.split("/")
    if p.endswith("/v1/files") and method == "POST":
        form = parse_multipart(headers, raw)
        filename, data = form.get("file", (None, b""))
        obj = store.add_file(data, filename=filename or "upload.jsonl",
                             purpose=(form.get("purpose", (None, b"batch"))[1] or b"batch").decode())
        store.event({"event": "file", "id": obj["id"], "bytes": len(data), "t": time.time()})
        return 200, json.dumps(obj).encode(), "application/json"
    if "files" in parts and p.endswith("/content") and method == "GET":
        data = store.contents.get(parts[-2])
        if data is None:
            return 404, json.dumps({"error": {"message": "no such file"}}).encode(), "application/json"
        return 200, data, "application/octet-stream"
    if "files" in parts and method == "GET" and parts[-2] == "files":
        obj = store.files.get(parts[-1])
        return (200, json.dumps(obj).encode(), "application/json") if obj else (
            404, json.dumps({"error": {"message": "no such file"}}).encode(), "application/json")
    if p.endswith("/v1/batches") and method == "POST":
        obj = store.create_batch(json.loads(raw or b"{}"), answer)
        status = obj.pop("_status", 200)
        return status, json.dumps(obj).encode(), "application/json"
    if p.endswith("/v1/batches") and method == "GET":
        data = [store.get(b) for b in store.batches]
        return 200, json.dumps({"object": "list", "data": data, "has_more": False}).encode(), "application/json"
    if "batches" in parts and p.endswith("/cancel") and method == "POST":
        obj = store.cancel(parts[-2])
    elif "batches" in parts and method == "GET" and parts[-2] == "batches":
        obj = store.get(parts[-1])
    else:
        return None
    if obj is None:
        return 404, json.dumps({"error": {"message": "no such batch"}}).encode(), "application/json"
    return 200, json.dumps(obj).encode(), "application/json"


# --------------------------------------------------------------------------- a stand-in for vLLM's run_batch


def run_batch(src: str, dst: str, *, url: str | None = None) -> int:
    """Answer every request line of the OpenAI batch input file `src` and write the results to `dst`
    in vLLM's `run_batch` output shape; returns the number of lines written. Each body is answered by
    the loopback server's logic in this process, or with `url` sent to that server's
    `/chat/completions`."""
    import urllib.request

    from openai_server import Behaviour

    behaviour = Behaviour()
    n = 0
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            if not line.strip():
                continue
            item = json.loads(line)
            if url:
                req = urllib.request.Request(url.rstrip("/") + "/chat/completions",
                                             data=json.dumps(item["body"]).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req) as resp:
                    status, payload = resp.status, json.loads(resp.read())
            else:
                status, payload = behaviour.answer(item["body"])
            rid = f"vllm-batch-{uuid.uuid4().hex[:16]}"
            fout.write(json.dumps({"id": f"vllm-{uuid.uuid4().hex[:16]}", "custom_id": item["custom_id"],
                                   "response": {"status_code": status, "request_id": rid, "body": payload},
                                   "error": None}) + "\n")
            n += 1
    return n


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="a stand-in for vLLM's run_batch over the loopback server's logic")
    sub = ap.add_subparsers(dest="command", required=True)
    rb = sub.add_parser("run-batch", help="answer an OpenAI batch input file")
    rb.add_argument("-i", "--input-file", required=True)
    rb.add_argument("-o", "--output-file", required=True)
    rb.add_argument("--url", default=None, help="a running loopback server's api_base")
    args = ap.parse_args()
    print(f"wrote {run_batch(args.input_file, args.output_file, url=args.url)} results to {args.output_file}")


if __name__ == "__main__":
    _main()
