"""What a merged sync into a bf16 engine keeps of a LoRA-sized update, on SmolLM2's q/k/v/o weights (6 of 30 layers),
by learning rate and step: base off the bf16 grid (the embedded checkpoint, a dequantised GGUF in float32) against on it
(the same weights cast to bf16, as with dtype = "bfloat16" or any bf16 checkpoint). No training and no vLLM: the LoRA
delta is scale * B @ A with A as peft initialises it (r 16, alpha 32) and B after k Adam steps of size lr, either all
of one sign ("consistent", the upper bound) or a random walk (sqrt(k) * lr). kept / changed as in
flatline.trainer.samplers.merge_precision; "step" is the update since the previous sync, "total" since the start.

    PYTHONPATH=. .venv/bin/python bench/bf16_merge_kept.py
"""
import math, torch, safetensors.torch as st
from flatline.trainer.models import embedded_dir
from flatline.trainer.samplers.merge_precision import CastSums, cast_sums
torch.manual_seed(0)
sd = st.load_file(str(embedded_dir() / "model.safetensors"))
names = [k for k in sd if any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj")) and "layers." in k]
names = [n for n in names if int(n.split("layers.")[1].split(".")[0]) % 5 == 0]  # 6 of 30 layers: enough
r, scale = 16, 2.0
A = {n: (torch.rand(r, sd[n].shape[1]) * 2 - 1) / math.sqrt(sd[n].shape[1]) for n in names}  # peft kaiming_uniform(a=sqrt 5)
S = {n: torch.randn(sd[n].shape[0], r).sign() for n in names}
for lr in (5e-5, 1e-5, 2e-6):
    for grid in ("off", "on"):
        for walk in ("consistent", "random-walk"):
            out = []
            for k in (1, 4, 8):
                mag = k * lr if walk == "consistent" else math.sqrt(k) * lr
                tot, stp = CastSums(), CastSums()
                for n in names:
                    W0 = sd[n] if grid == "off" else sd[n].to(torch.bfloat16).float()
                    d = scale * (mag * S[n]) @ A[n]
                    prev = scale * ((k - 1) * lr * S[n] if walk == "consistent" else math.sqrt(k - 1) * lr * S[n]) @ A[n]
                    tot = tot + cast_sums(W0, W0 + d, torch.bfloat16)
                    stp = stp + cast_sums(W0 + prev, W0 + d, torch.bfloat16)
                t, s = tot.ratios(), stp.ratios()
                out.append(f"k={k}: total kept {t['kept']:.3f} changed {t['changed']:.3f} | step kept {s['kept']:.3f} changed {s['changed']:.3f} | median|delta| {float(d.abs().median()):.1e}")
            print(f"lr {lr:g} base {grid}-grid {walk}:\n   " + "\n   ".join(out), flush=True)
