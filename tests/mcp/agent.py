"""An agent driving `agentcap serve` with the official Python MCP SDK.

Usage: agent.py PLAN_JSON

PLAN_JSON is an object:
  server: {"command": ..., "args": [...], "env": {...}} (stdio), or
          {"url": ..., "headers": {...}} (streamable HTTP)
  mode:   "legacy" (initialize handshake, server-to-client elicitation) or
          "2026-07-28" (per-request envelope, InputRequired round trips)
  elicitation: false to connect as a client that cannot show forms
  open_links: true to open (HTTP GET) the link of a URL elicitation twice,
          report both statuses, and accept
  auto_accept: true to accept every form with every item selected, as a
          harness in a non-interactive mode does (no human sees anything)
  steps:  a list of operations, run in order:
    {"op": "list"}
    {"op": "call", "name": ..., "args": {...}, "answers": [ANSWER, ...]}
    {"op": "cancel", "name": ..., "args": {...}, "after_ms": N}
  ANSWER: {"action": "accept", "approve": true | ["1", "3"]} or
          {"action": "decline"} or {"action": "cancel"}

Prints one JSON object: the protocol version and one report per step,
including every elicitation the server sent (message and schema).
"""

import json
import sys
import time

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import ElicitResult


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(plan):
    asked = []
    answers = []

    def everything(schema):
        approve = schema.get("properties", {}).get("approve", {})
        if approve.get("type") == "array":
            return [choice["const"] for choice in approve["items"]["anyOf"]]
        return True

    def fetch(url):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return {"status": response.status, "final_url": response.geturl()}
        except urllib.error.HTTPError as e:
            return {"status": e.code, "final_url": url}

    async def on_elicit(context, params):
        if getattr(params, "mode", "form") == "url":
            opened = [fetch(params.url), fetch(params.url)] if plan.get("open_links") else []
            asked.append({"mode": "url", "message": params.message, "url": params.url, "opened": opened})
            return ElicitResult(action="accept")
        asked.append({"message": params.message, "schema": params.requested_schema})
        if plan.get("auto_accept"):
            return ElicitResult(
                action="accept", content={"approve": everything(params.requested_schema)}
            )
        answer = answers.pop(0) if answers else {"action": "decline"}
        if answer["action"] != "accept":
            return ElicitResult(action=answer["action"])
        return ElicitResult(action="accept", content={"approve": answer["approve"]})

    server = plan["server"]
    if "url" in server:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers=server.get("headers", {}), timeout=120)
        target = streamable_http_client(server["url"], http_client=http)
    else:
        target = StdioServerParameters(
            command=server["command"], args=server["args"], env=server.get("env")
        )
    reports = []
    # Without a callback the client declares no elicitation capability.
    callback = on_elicit if plan.get("elicitation", True) else None
    async with Client(target, mode=plan["mode"], elicitation_callback=callback) as client:
        for step in plan["steps"]:
            asked.clear()
            answers[:] = list(step.get("answers", []))
            started = time.monotonic()
            if step["op"] == "list":
                listed = await client.list_tools()
                report = {"tools": [dump(t) for t in listed.tools]}
            elif step["op"] == "call":
                result = await client.call_tool(step["name"], step.get("args", {}))
                report = {"result": dump(result)}
            elif step["op"] == "cancel":
                finished = None
                with anyio.move_on_after(step["after_ms"] / 1000):
                    finished = dump(await client.call_tool(step["name"], step.get("args", {})))
                report = {"finished_before_cancel": finished}
            else:
                raise SystemExit(f"unknown op {step['op']}")
            report["elicitations"] = list(asked)
            report["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
            reports.append(report)
        protocol = client.protocol_version
    print(json.dumps({"protocol": protocol, "steps": reports}))


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
