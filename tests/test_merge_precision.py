"""What a merged sync into a bf16 engine keeps of an update (flatline.trainer.samplers.merge_precision): exact on a
base that sits on the bf16 grid, kept in expectation on one that does not, always kept in float32."""
import torch

from flatline.trainer.samplers.merge_precision import MergedSyncMeter, update_kept

BF16 = torch.bfloat16


def on_grid_base(n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Weights of a bf16 checkpoint held in float32, |w| in [0.0625, 0.125): one bf16 unit there is 2**-11."""
    g = torch.Generator().manual_seed(seed)
    magnitude = 0.07 + 0.05 * torch.rand(n, generator=g)  # away from the cell edges 0.0625 and 0.125
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return (sign * magnitude).to(BF16).float()


UNIT = 2.0 ** -11


def random_signs(n: int, seed: int) -> torch.Tensor:
    return torch.where(torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5, -1.0, 1.0)


def test_deltas_below_half_a_unit_of_an_on_grid_base_are_kept_nowhere():
    base = on_grid_base()
    after = base + 0.49 * UNIT * random_signs(base.numel(), 1)
    assert update_kept(base, after, BF16) == {"kept": 0.0, "changed": 0.0}


def test_deltas_well_above_a_unit_are_kept():
    base = on_grid_base()
    after = base + 40 * UNIT * random_signs(base.numel(), 2)
    kept = update_kept(base, after, BF16)
    assert abs(kept["kept"] - 1) < 0.01 and kept["changed"] == 1.0


def test_off_grid_base_keeps_small_deltas_in_expectation_only():
    g = torch.Generator().manual_seed(3)
    base = 0.0625 + 0.0625 * torch.rand(200_000, generator=g)  # float32 weights anywhere inside their bf16 cells
    after = base + 0.1 * UNIT  # one sign: round-to-nearest moves an element a whole unit with probability ~0.1
    kept = update_kept(base, after, BF16)
    assert abs(kept["kept"] - 1) < 0.05 and 0.05 < kept["changed"] < 0.15


def test_float32_keeps_everything_and_a_still_tensor_reports_nothing():
    base = on_grid_base()
    assert update_kept(base, base + 1e-7, torch.float32)["kept"] == 1.0
    assert update_kept(base, base.clone(), BF16) == {}


def test_meter_reports_the_step_and_the_cumulative_update_as_small_steps_add_up():
    base = {"w": on_grid_base(seed=4)}
    meter = MergedSyncMeter(BF16)
    meter.begin(base)
    signs = random_signs(base["w"].numel(), 5)
    first = meter.measure({"w": base["w"] + 0.3 * UNIT * signs})  # below half a unit: all rounded away
    assert first["sync/merged_update_kept"] == 0.0 and first["sync/merged_total_kept"] == 0.0
    second = meter.measure({"w": base["w"] + 0.6 * UNIT * signs})  # the sum crosses half a unit: the engine jumps
    assert second["sync/merged_total_changed"] == 1.0
    assert second["sync/merged_total_kept"] > 1.0  # a whole unit for 0.6 of one
    assert second["sync/merged_update_kept"] > 3.0  # this sync's 0.3 unit moved the engine a whole unit


def test_meter_stays_off_for_a_float32_engine():
    meter = MergedSyncMeter(torch.float32)
    meter.begin({"w": on_grid_base()})
    assert not meter.active and meter.start == {} and meter.measure({"w": on_grid_base() + 1.0}) == {}


def tiny_lora_model(*overrides: str):
    from flatline.trainer.models import load_model, load_tokenizer, resolve_source
    from tests.conftest import tiny_config

    cfg = tiny_config("lora_r=4", "lora_target_modules=['q_proj','v_proj']", *overrides)
    source = resolve_source(cfg.model)
    return load_model(source, load_tokenizer(source), cfg)


def test_a_merged_sync_of_a_bf16_base_sums_in_float32_and_measures_only_the_lora_layers():
    from flatline.trainer.samplers.sync import merged_state, synced_layers

    model = tiny_lora_model("dtype=bfloat16")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.constant_(parameter, 1e-4)  # a trained adapter: a small delta on every q/v weight
    pushed = dict(merged_state(model, full_precision=True))
    layers = synced_layers(model, list(pushed.items()))
    assert layers and all(("q_proj" in n or "v_proj" in n) and t.dtype == torch.float32 for n, t in layers.items())
    name = next(iter(layers))
    base = dict(model.get_base_model().state_dict())[name.replace(".weight", ".base_layer.weight")]
    assert base.dtype == BF16 and not torch.equal(layers[name], base.float())  # the delta is there in float32 ...
    assert dict(merged_state(model))[name].dtype == BF16  # ... and rounded back to the base's dtype unless asked
