"""tools: a multi-turn tool-use task. Each example is a small key-value store the model cannot see; it must call the
`lookup` tool with a Hermes-style JSON tool call, read the tool's answer, and reply with the value
(tools_question = "value"), or look two keys up and reply with the sum of their values ("sum", a two-hop question).

    system: the tools and the call format
    user/model: two worked episodes (the same exchange for keys never asked)
    user:   What is the value stored under the key "pear"?
    model:  <tool_call>{"name": "lookup", "arguments": {"key": "pear"}}</tool_call>
    tool:   <tool_response>57</tool_response>
    model:  57

Episodes run in flatline.trainer.episodes (the environment is flatline.trainer.episodes.env.KeyValueEnv). Reward
components: `outcome` (1 when the final answer's last number is the value; graded once per episode, with a deadline)
and `tool_calls` (+1 per call that ran, -1 per malformed or failed call, clipped to [-cap, cap] by
tool_call_reward_cap, 0: uncapped). `score` replays a transcript (the model's turns joined by newlines) against a
fresh environment, so the reward self-check and preflight can score the reference offline.
"""
from __future__ import annotations

import random
import re

from flatline.common.errors import ConfigError
from flatline.trainer.episodes.env import KeyValueEnv, StepBudget
from flatline.trainer.episodes.toolcall import format_call, parse_turn
from flatline.trainer.tasks.base import Example, Task, resolve_weights

DEFAULT_WEIGHTS = {"outcome": 1.0, "tool_calls": 0.2}
# Per-call reward components (the rest are outcome terms): the episodes probe splits the reward by this.
PER_CALL_COMPONENTS = ("tool_calls",)
KEYS = ("apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "peach", "grape", "lemon", "melon", "cherry",
        "olive", "date", "guava", "papaya")
SYSTEM = ("You can call a tool named lookup that returns the value stored under a key. Call it with "
          '<tool_call>{"name": "lookup", "arguments": {"key": "KEY"}}</tool_call>, then reply with just the value.')
NUMBER = re.compile(r"-?\d+")


def question_for(keys: list[str]) -> str:
    if len(keys) == 1:
        return f'What is the value stored under the key "{keys[0]}"?'
    return f'What is the sum of the values stored under the keys "{keys[0]}" and "{keys[1]}"?'


def worked_episode(store: dict[str, int]) -> list[dict]:
    """The exchange for a question over the store's keys: one lookup per key, then the answer (the sum)."""
    turns = [{"role": "user", "content": question_for(list(store))}]
    for key, value in store.items():
        turns += [{"role": "assistant", "content": format_call("lookup", {"key": key})},
                  {"role": "user", "content": f"<tool_response>{value}</tool_response>"}]
    return [*turns, {"role": "assistant", "content": str(sum(store.values()))}]


# Two worked episodes before the question: a 135M model copies a format it has seen far more readily than one
# described. Measured on SmolLM2-135M-Instruct (teacher-forced, 4 keys): the exact call for the asked key has mean
# log-probability -18.6 with no example, -7.2 after one worked episode (sampled at temperature 1 it copied the
# <tool_response> line instead of calling), -1.0 after two; GRPO needs calls in the first groups to learn from.
SHOTS = {"value": [*worked_episode({"quince": 31}), *worked_episode({"banana": 64})],  # keys outside KEYS: never asked
         "sum": [*worked_episode({"quince": 31, "banana": 64}), *worked_episode({"walnut": 23, "almond": 45})]}


def final_answer_correct(answer: str, value: int) -> float:
    """1.0 when the answer's last integer is the value (the text after the last tool call), else 0.0."""
    numbers = NUMBER.findall(answer)
    return float(bool(numbers) and int(numbers[-1]) == value)


def clip_calls(total: float, cap: float) -> float:
    return total if cap <= 0 else max(-cap, min(cap, total))


class ToolsTask(Task):
    """Key-value lookup through a tool; an environment task (the trainer runs it as multi-turn episodes)."""

    name = "tools"
    components = ("outcome", "tool_calls")
    per_call_components = PER_CALL_COMPONENTS
    is_environment = True

    def __init__(self, train, eval, weights, call_cap: float):
        super().__init__(train, eval, weights)
        self.call_cap = call_cap

    def make_env(self, example: Example, budget: StepBudget) -> KeyValueEnv:
        return KeyValueEnv(example.row["store"], budget)

    def grade(self, answer: str, example: Example) -> float:
        """The outcome term of a finished episode from its final answer."""
        return final_answer_correct(answer, example.row["value"])

    def score(self, completion: str, example: Example, completion_ids: list[int]) -> dict[str, float | None]:
        """Replay a transcript's tool calls against a fresh environment; grade the text after the last call."""
        env = self.make_env(example, StepBudget(0))
        calls = 0.0
        turn = parse_turn(completion)
        for call in turn.calls:
            calls += env.step(call).reward
        calls -= len(turn.errors)
        answer = completion.rsplit("</tool_call>", 1)[-1]
        return {"outcome": self.grade(answer, example), "tool_calls": clip_calls(calls, self.call_cap)}


def make_example(index: int, rng: random.Random, num_keys: int, split: str, kind: str = "value") -> Example:
    keys = rng.sample(KEYS, num_keys)
    # a sum question's values are single digits: SmolLM2-135M adds two of them now and then (3 of 64 episodes at
    # step 0), two-digit ones never (0 of 64), and a task with no outcome at all teaches nothing
    store = {key: rng.randint(10, 99) if kind == "value" else rng.randint(1, 9) for key in keys}
    asked = rng.sample(keys, 1 if kind == "value" else 2)
    question = question_for(asked)
    value = sum(store[key] for key in asked)
    reference = "\n".join([*(format_call("lookup", {"key": key}) for key in asked), str(value)])
    return Example(id=f"tools-{split}-{index}", messages=[{"role": "system", "content": SYSTEM}, *SHOTS[kind],
                                                           {"role": "user", "content": question}],
                   row={"store": store, "key": asked[0], "keys": asked, "value": value, "question": question},
                   reference=reference)


def from_config(config) -> ToolsTask:
    """Generate train_size + eval_size stores (seeded); tools_store_size keys each; tools_question asks one value or
    the sum of two."""
    if config.data or config.eval_data:
        raise ConfigError("data: task tools generates its own stores; leave data and eval_data empty")
    if not 1 <= config.tools_store_size <= len(KEYS):
        raise ConfigError(f"tools_store_size: must be in [1, {len(KEYS)}], got {config.tools_store_size}")
    if config.tools_question == "sum" and config.tools_store_size < 2:
        raise ConfigError(f"tools_store_size: a sum question needs 2 keys in the store, got {config.tools_store_size}")
    weights = resolve_weights("tools", DEFAULT_WEIGHTS, config.reward_weights)
    rng = random.Random(config.seed)
    train_size = config.train_size or 256
    size, kind = config.tools_store_size, config.tools_question
    train = [make_example(i, rng, size, "train", kind) for i in range(train_size)]
    held = [make_example(i, rng, size, "eval", kind) for i in range(config.eval_size)]
    return ToolsTask(train, held, weights, config.tool_call_reward_cap)
