r"""A pipeline for `orchestrator run`: parse, enrich through an adaptor, summarise.

    orchestrator run examples/pipelines/etl.py --module-home examples/pipelines \
        --allow '^json$' --allow '^adaptors(\.|$)' --state '{"raw": "[3, 1, 2]"}'
"""

import json

from adaptors import pricing


def parse(state):
    return {**state, "items": json.loads(state.get("raw", "[]"))}


async def enrich(state):
    return {**state, "priced": [pricing.price(item) for item in state["items"]]}


def summarise(state, ctx):
    ctx.log.info("summarising %d items", len(state["priced"]))
    return {**state, "total": sum(state["priced"])}


pipeline = [parse, enrich, summarise]
