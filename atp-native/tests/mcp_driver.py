"""Drives an MCP server over stdio with the official Python MCP SDK (`mcp` on PyPI), for
atp-native/tests/mcp.rs: one JSON command per line on stdin, one JSON answer per line on stdout.

    python mcp_driver.py MODE [--env NAME=VALUE]... -- COMMAND [ARG]...

MODE is `auto` (the SDK's default: `server/discover`, protocol 2026-07-28 when the server speaks it)
or `legacy` (the `initialize` handshake of earlier versions). The server gets only the SDK's safe
environment plus the --env pairs, as a desktop MCP client would start it.

Commands: {"op": "info"} | {"op": "list_tools"} | {"op": "call_tool", "name": N, "arguments": {...}}
| {"op": "list_resources"} | {"op": "read_resource", "uri": U} | {"op": "subscribe", "uri": U}
(resources/subscribe in legacy mode, subscriptions/listen otherwise) | {"op": "updates", "timeout": S}
(waits up to S seconds for at least one notifications/resources/updated, returns the URIs seen since
the last call) | {"op": "quit"}. Every answer is {"ok": true, ...} or {"ok": false, "error": ...}.
"""

import json
import sys
import traceback
import warnings

import anyio
from mcp import Client, StdioServerParameters

warnings.simplefilter("ignore")  # resources/subscribe is deprecated in the SDK, and used on purpose


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main():
    argv = sys.argv[1:]
    mode = argv.pop(0)
    env = {}
    while argv and argv[0] == "--env":
        name, _, value = argv[1].partition("=")
        env[name] = value
        argv = argv[2:]
    assert argv and argv[0] == "--", "usage: mcp_driver.py MODE [--env NAME=VALUE]... -- COMMAND [ARG]..."
    command, args = argv[1], argv[2:]

    updates = []
    arrived = anyio.Event()
    box = {"arrived": arrived}

    def updated(uri):
        updates.append(uri)
        box["arrived"].set()

    async def on_message(message):
        # In legacy mode updates come here; with subscriptions/listen they come (also) through the
        # stream, which is what counts then.
        if mode == "legacy" and getattr(message, "method", None) == "notifications/resources/updated":
            updated(message.params.uri)

    server = StdioServerParameters(command=command, args=args, env=env)
    async with Client(server, mode=mode, message_handler=on_message, read_timeout_seconds=120) as client:
        async with anyio.create_task_group() as tg:

            async def listen(uri, ready):
                try:
                    async with client.listen(resource_subscriptions=[uri]) as sub:
                        ready["honored"] = sub.honored.model_dump(mode="json", by_alias=True, exclude_none=True)
                        ready["event"].set()
                        async for event in sub:
                            updated(getattr(event, "uri", str(event)))
                except Exception as e:  # reported to the next command
                    ready["error"] = f"{type(e).__name__}: {e}"
                    ready["event"].set()

            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                cmd = json.loads(line)
                op = cmd["op"]
                try:
                    if op == "quit":
                        out = {"ok": True}
                    elif op == "info":
                        out = {
                            "ok": True,
                            "protocol_version": client.protocol_version,
                            "server_info": dump(client.server_info) if client.server_info else None,
                            "capabilities": dump(client.server_capabilities),
                            "instructions": client.instructions,
                        }
                    elif op == "list_tools":
                        out = {"ok": True, "tools": [dump(t) for t in (await client.list_tools()).tools]}
                    elif op == "call_tool":
                        result = await client.call_tool(cmd["name"], cmd.get("arguments"))
                        out = {"ok": True, "result": dump(result)}
                    elif op == "list_resources":
                        out = {"ok": True, "resources": [dump(r) for r in (await client.list_resources()).resources]}
                    elif op == "read_resource":
                        out = {"ok": True, "result": dump(await client.read_resource(cmd["uri"]))}
                    elif op == "subscribe":
                        if mode == "legacy":
                            await client.subscribe_resource(cmd["uri"])
                            out = {"ok": True, "how": "resources/subscribe"}
                        else:
                            ready = {"event": anyio.Event()}
                            tg.start_soon(listen, cmd["uri"], ready)
                            with anyio.fail_after(30):
                                await ready["event"].wait()
                            if "error" in ready:
                                raise RuntimeError(ready["error"])
                            out = {"ok": True, "how": "subscriptions/listen", "honored": ready["honored"]}
                    elif op == "updates":
                        with anyio.move_on_after(cmd.get("timeout", 30)):
                            await box["arrived"].wait()
                        out = {"ok": True, "uris": list(updates)}
                        updates.clear()
                        box["arrived"] = anyio.Event()
                    else:
                        out = {"ok": False, "error": f"unknown op {op}"}
                except Exception as e:
                    out = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
                print(json.dumps(out), flush=True)
                if op == "quit":
                    break
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
