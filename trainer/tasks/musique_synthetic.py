"""Synthetic MuSiQue: 2-4 hop questions over a small fictional world, in MuSiQue's record schema, offline.

Each question gets its own world (a few people, companies, cities and countries with relations such as
spouse, employer, founder, birthplace, headquarters, country, capital), built by a random.Random seeded with
(seed, split, index), so the rows depend only on those. A question follows a chain of relations from a start
entity, e.g. "Who founded the company that employs the spouse of Dr. Mira Okafor?"; every hop is a
`question_decomposition` entry ("#1" names the previous hop's answer) supported by the paragraph about the
hop's subject. Paragraphs about other entities of the same world are distractors (is_supporting False); the
order is shuffled and `idx` is the position, as in MuSiQue. Answers are entity names with aliases.

Leaves out: MuSiQue's non-chain question shapes, unanswerable contrasts and long Wikipedia paragraphs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

HOPS = (2, 3, 4)  # MuSiQue's hop counts
PARAGRAPHS_PER_QUESTION = 8  # MuSiQue gives 20 long ones; 8 short ones keep prompts near 300 tokens
WORLD_SIZE = {"person": 6, "company": 3, "city": 4, "country": 2}  # 15 paragraphs: enough for 4 hops + distractors
DOCTOR_SHARE = 1 / 3  # people titled "Dr.", so some answers have a title their aliases drop
MAX_CHAIN_TRIES = 50  # chain draws per world before drawing a new world (a draw fails when it revisits an entity)
MAX_WORLDS = 100  # worlds per question before giving up (never reached in practice: a sign of a bug)

FIRST_NAMES = ("Mira", "Tomas", "Ana", "Kofi", "Lena", "Ravi", "Ines", "Yusuf", "Sana", "Oren", "Hana", "Dario",
               "Ilse", "Marek", "Noor", "Teo", "Aiko", "Bram", "Zuri", "Felix", "Ona", "Pavel", "Rhea", "Jonas")
LAST_NAMES = ("Okafor", "Reyes", "Lindqvist", "Haddad", "Moreau", "Tanaka", "Novak", "Achebe", "Castell", "Iversen",
              "Marlow", "Petrosyan", "Quint", "Sorensen", "Valdez", "Whitlock", "Yilmaz", "Brandt", "Dufresne",
              "Kowal", "Nakamura", "Oduya", "Ferreira", "Halvorsen")
CITY_NAMES = ("Veltra", "Quillmar", "Ostby", "Carrowen", "Deslin", "Fenhold", "Grisport", "Harrowgate", "Ilvane",
              "Jorund", "Kestrel Bay", "Lunmere", "Marisco", "Norwick", "Palisar", "Rendale")
COUNTRY_NAMES = ("Norland", "Estavia", "Corvania", "Talmuria", "Brevonia", "Solvany", "Kasmir Reach", "Ulvania")
COMPANY_STEMS = ("Corvane", "Heliox", "Brightwater", "Tessaly", "Ambrel", "Quorra", "Zentith", "Marrowind",
                 "Lumeris", "Oakhaven", "Vantor", "Sableton")
INDUSTRIES = (("Systems", "a software"), ("Foods", "a food"), ("Shipping", "a shipping"), ("Labs", "a biotech"),
              ("Textiles", "a textile"), ("Motors", "an automotive"))
# Traits carry their article ("an architect", "a university city"): no rule to get wrong.
PROFESSIONS = ("an architect", "a violinist", "a marine biologist", "a surgeon", "a journalist", "a chemist",
               "a pilot", "a lawyer", "a painter", "an engineer")
CITY_KINDS = ("a port", "a mountain", "a river", "a university", "a mining", "a border")


@dataclass(frozen=True)
class Relation:
    """A function from one entity kind to another, with the English to ask for it."""

    name: str
    subject: str
    object: str
    phrase: str  # a noun phrase naming the object, given the subject as {x}
    question: str  # a question asking for the object, given the subject as {x}


RELATIONS = (
    Relation("spouse", "person", "person", "the spouse of {x}", "Who is the spouse of {x}?"),
    Relation("employer", "person", "company", "the company that employs {x}", "Which company employs {x}?"),
    Relation("birthplace", "person", "city", "the city where {x} was born", "In which city was {x} born?"),
    Relation("founder", "company", "person", "the founder of {x}", "Who founded {x}?"),
    Relation("headquarters", "company", "city", "the city where {x} is headquartered", "In which city is {x} headquartered?"),
    Relation("country", "city", "country", "the country that contains {x}", "Which country contains {x}?"),
    Relation("capital", "country", "city", "the capital of {x}", "What is the capital of {x}?"),
)


@dataclass
class Entity:
    """One thing in the world; `facts` maps a relation name to the name of the related entity."""

    kind: str
    name: str
    aliases: tuple[str, ...] = ()
    trait: str = ""  # profession, industry or kind of city with its article, for the paragraph
    facts: dict[str, str] = field(default_factory=dict)


def _people(rng: random.Random, count: int) -> list[Entity]:
    people = []
    for first, last in zip(rng.sample(FIRST_NAMES, count), rng.sample(LAST_NAMES, count)):
        full = f"{first} {last}"
        if rng.random() < DOCTOR_SHARE:
            people.append(Entity("person", f"Dr. {full}", (full, last), rng.choice(PROFESSIONS)))
        else:
            people.append(Entity("person", full, (last,), rng.choice(PROFESSIONS)))
    return people


def build_world(rng: random.Random) -> dict[str, Entity]:
    """A small consistent world: every relation is a function, spouses come in pairs, capitals lie in their country."""
    people = _people(rng, WORLD_SIZE["person"])
    companies = []
    for stem in rng.sample(COMPANY_STEMS, WORLD_SIZE["company"]):
        suffix, industry = rng.choice(INDUSTRIES)
        companies.append(Entity("company", f"{stem} {suffix}", (stem,), industry))
    cities = [Entity("city", name, (), rng.choice(CITY_KINDS)) for name in rng.sample(CITY_NAMES, WORLD_SIZE["city"])]
    countries = [Entity("country", name) for name in rng.sample(COUNTRY_NAMES, WORLD_SIZE["country"])]

    for i, city in enumerate(cities):  # the first cities go round-robin so every country has one
        city.facts["country"] = (countries[i] if i < len(countries) else rng.choice(countries)).name
    for country in countries:
        country.facts["capital"] = rng.choice([c for c in cities if c.facts["country"] == country.name]).name
    couples = rng.sample(people, len(people))
    for a, b in zip(couples[0::2], couples[1::2]):
        a.facts["spouse"], b.facts["spouse"] = b.name, a.name
    for person in people:
        person.facts["employer"] = rng.choice(companies).name
        person.facts["birthplace"] = rng.choice(cities).name
    for company in companies:
        company.facts["founder"] = rng.choice(people).name
        company.facts["headquarters"] = rng.choice(cities).name
    return {entity.name: entity for entity in people + companies + cities + countries}


def describe(entity: Entity) -> str:
    """The entity's paragraph: a sentence or two stating all its facts."""
    f, name = entity.facts, entity.name
    if entity.kind == "person":
        return (f"{name}, {entity.trait} born in {f['birthplace']}, works at {f['employer']}. "
                f"{name} is married to {f['spouse']}.")
    if entity.kind == "company":
        return f"{name} is {entity.trait} company founded by {f['founder']}. It is headquartered in {f['headquarters']}."
    if entity.kind == "city":
        return f"{name} is {entity.trait} city in {f['country']}."
    return f"{name} is a country whose capital is {f['capital']}."


def sample_chain(world: dict[str, Entity], hops: int, rng: random.Random) -> list[tuple[Entity, Relation]] | None:
    """`hops` (subject, relation) steps from a random start, or None if the walk revisits an entity."""
    current = world[rng.choice(sorted(world))]
    seen, chain = {current.name}, []
    for _ in range(hops):
        relation = rng.choice([r for r in RELATIONS if r.subject == current.kind])
        target = world[current.facts[relation.name]]
        if target.name in seen:
            return None
        chain.append((current, relation))
        seen.add(target.name)
        current = target
    return chain


def compose_question(chain: list[tuple[Entity, Relation]]) -> str:
    """Nest each hop's phrase inside the next: "Who founded the company that employs the spouse of X?"."""
    phrase = chain[0][0].name
    for _, relation in chain[:-1]:
        phrase = relation.phrase.format(x=phrase)
    return chain[-1][1].question.format(x=phrase)


def make_record(rng: random.Random, record_id: str) -> dict:
    """One question in MuSiQue's schema, drawn from `rng`."""
    hops = rng.choice(HOPS)
    for _ in range(MAX_WORLDS):
        world = build_world(rng)
        for _ in range(MAX_CHAIN_TRIES):
            chain = sample_chain(world, hops, rng)
            if chain is not None:
                return _record(world, chain, rng, record_id)
    raise RuntimeError(f"no {hops}-hop chain found in {MAX_WORLDS} worlds; WORLD_SIZE is too small")


def _record(world: dict[str, Entity], chain: list[tuple[Entity, Relation]], rng: random.Random, record_id: str) -> dict:
    subjects = [subject.name for subject, _ in chain]
    others = [name for name in sorted(world) if name not in subjects]
    chosen = subjects + rng.sample(others, PARAGRAPHS_PER_QUESTION - len(subjects))
    rng.shuffle(chosen)
    position = {name: idx for idx, name in enumerate(chosen)}
    paragraphs = [{"idx": idx, "title": name, "paragraph_text": describe(world[name]), "is_supporting": name in subjects}
                  for idx, name in enumerate(chosen)]
    decomposition = []
    for hop, (subject, relation) in enumerate(chain, start=1):
        asked = subject.name if hop == 1 else f"#{hop - 1}"
        decomposition.append({"id": hop, "question": relation.question.format(x=asked),
                              "answer": subject.facts[relation.name], "paragraph_support_idx": position[subject.name]})
    answer = world[decomposition[-1]["answer"]]
    return {"id": record_id, "paragraphs": paragraphs, "question": compose_question(chain),
            "question_decomposition": decomposition, "answer": answer.name,
            "answer_aliases": list(answer.aliases), "answerable": True}


def generate(seed: int, split: str, count: int, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """`count` records with distinct questions, none in `exclude`; the same (seed, split) gives the same rows."""
    records, questions, index = [], set(exclude), 0
    while len(records) < count:
        rng = random.Random(f"musique-synthetic/{seed}/{split}/{index}")
        record = make_record(rng, f"synthetic__{split}_{seed}_{index}")
        if record["question"] not in questions:
            questions.add(record["question"])
            records.append(record)
        index += 1
    return records
