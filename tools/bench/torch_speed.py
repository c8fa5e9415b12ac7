"""The reference engine's speed on a Hugging Face Switch Transformers checkpoint.

Runs what `switchscope bench speed` runs, with transformers on PyTorch (the CPU, or a CUDA GPU
with --device cuda): one warm-up run, then --runs measured runs, each encoding --input-ids and
decoding --new-tokens tokens greedily with the KV cache (not stopping at EOS). Each step's token
is read back to the host, as ours is. Prints one JSON object with the medians.

    python tools/bench/torch_speed.py --model DIR --input-ids 5,6,7,1 --new-tokens 32 --runs 5

Versions: tools/bench/requirements.txt. Used by `cargo xtask bench`; never at run time.
"""

import argparse
import inspect
import json
import statistics
import time

import torch
import transformers
from transformers import SwitchTransformersForConditionalGeneration


# The KV cache's argument and output field: `cache` in transformers 5.24, `past_key_values`
# before.
CACHE_ARG = (
    "cache"
    if "cache" in inspect.signature(SwitchTransformersForConditionalGeneration.forward).parameters
    else "past_key_values"
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(model, input_ids, new_tokens, start):
    device = input_ids.device
    with torch.inference_mode():
        sync(device)
        t0 = time.perf_counter()
        encoder_outputs = model.get_encoder()(input_ids=input_ids)
        sync(device)
        encode_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        output = [start]
        past = None
        for _ in range(new_tokens):
            out = model(
                encoder_outputs=encoder_outputs,
                decoder_input_ids=torch.tensor([[output[-1]]], device=device),
                use_cache=True,
                **{CACHE_ARG: past},
            )
            past = getattr(out, CACHE_ARG)
            output.append(int(out.logits[0, -1].argmax()))
        decode_ms = (time.perf_counter() - t0) * 1e3
    return encode_ms, decode_ms, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input-ids", required=True)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a CUDA GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = SwitchTransformersForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    model.to(device).eval()
    load_s = time.perf_counter() - t0
    ids = [int(i) for i in args.input_ids.split(",")]
    input_ids = torch.tensor([ids], device=device)
    start = model.config.decoder_start_token_id
    t0 = time.perf_counter()
    run_once(model, input_ids, args.new_tokens, start)
    warmup_s = time.perf_counter() - t0
    encode, decode, output = [], [], []
    for _ in range(max(1, args.runs)):
        e, d, output = run_once(model, input_ids, args.new_tokens, start)
        encode.append(e)
        decode.append(d)
    print(json.dumps({
        "model": args.model,
        "backend": f"pytorch-{device.type}",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "input_ids": ids,
        "new_tokens": args.new_tokens,
        "runs": len(encode),
        "load_s": load_s,
        "warmup_s": warmup_s,
        "encode_ms": encode,
        "decode_ms": decode,
        "encoder_tokens_per_s": len(ids) * 1e3 / statistics.median(encode),
        "decode_tokens_per_s": args.new_tokens * 1e3 / statistics.median(decode),
        "output_ids": output,
    }))


if __name__ == "__main__":
    main()
