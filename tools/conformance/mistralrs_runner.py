"""mistral.rs's side of make conformance: runs in a process with the mistralrs wheel on its path.

    python tools/conformance/mistralrs_runner.py JOB.json

JOB.json: ``{"snapshot": DIR, "arch": "Qwen2VL", "cases": [{"image": PNG or null, "text": "...", "out": JSON}]}``.
mistral.rs loads the snapshot (a whole VLM: its vision tower cannot be run alone from Python) in float32 on the CPU,
with an f32 KV cache (``MISTRALRS_CPU_KV_F32=1``), and for each case asks for one token with the log-probabilities of
the whole vocabulary; it writes ``{"prompt_tokens": n, "logprobs": [[token id, logprob], ...]}``. A case with
``"repeat": n`` is sent once more than n times (with one log-probability, not the vocabulary's; request k with
``images[k]`` where given, since mistral.rs caches an encoded image) and its ``seconds`` are the last n requests'
wall times. A failure to load writes ``{"error": ...}`` for every case and exits 0, so that
the report can say what failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(job_file: str) -> int:
    os.environ.setdefault("MISTRALRS_CPU_KV_F32", "1")
    from mistralrs import ChatCompletionRequest, ModelDType, MultimodalArchitecture, Runner, Which

    job = json.loads(Path(job_file).read_text())
    try:
        runner = Runner(which=Which.MultimodalPlain(model_id=job["snapshot"], arch=getattr(
            MultimodalArchitecture, job["arch"]), dtype=ModelDType.F32), no_paged_attn=True)
    except Exception as exc:  # noqa: BLE001 (the runtime's own message is the finding)
        for case in job["cases"]:
            Path(case["out"]).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
        return 0
    vocab = job["vocab_size"]
    def request_for(case, image):
        content = [{"type": "text", "text": case["text"]}]
        if image:
            content.insert(0, {"type": "image_url", "image_url": {"url": str(Path(image).resolve())}})
        return ChatCompletionRequest(model="qvlearn", messages=[{"role": "user", "content": content}],
                                     max_tokens=1, temperature=0.0, logprobs=True,
                                     top_logprobs=1 if case.get("repeat") else vocab)

    for case in job["cases"]:
        seconds = []
        try:
            for k in range(case.get("repeat", 0) + 1):  # with a repeat: one warm request, then the timed ones
                # each timed request has an image of its own (``images``): mistral.rs caches encoded images
                request = request_for(case, (case.get("images") or [case.get("image")] * (k + 1))[k])
                t0 = time.perf_counter()
                response = runner.send_chat_completion_request(request)
                if k:
                    seconds.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001
            Path(case["out"]).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
            continue
        first = response.choices[0].logprobs.content[0]
        Path(case["out"]).write_text(json.dumps({
            "prompt_tokens": response.usage.prompt_tokens, "seconds": seconds,
            "logprobs": [[t.token, t.logprob] for t in first.top_logprobs] if not case.get("repeat") else []}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
