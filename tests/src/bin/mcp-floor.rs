//! The floor for the MCP benchmarks (`tests/benches/mcp_stdio.rs`): a no-op
//! MCP-shaped server on stdio. It reads each newline-delimited JSON-RPC
//! message, parses it, and answers `initialize`, `tools/list`, `tools/call`
//! and `ping` at once, without doing any work: what any stdio MCP server
//! costs at least (pipes, a JSON parse and a JSON reply), measured by the
//! same client as `agentcap serve`.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

fn answer(method: &str, params: &Value) -> Result<Value, (i64, &'static str)> {
    match method {
        "initialize" => Ok(json!({
            "protocolVersion": params.get("protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mcp-floor", "version": "0"},
        })),
        "tools/list" => Ok(json!({"tools": [{
            "name": "nothing",
            "description": "Does nothing.",
            "inputSchema": {"type": "object", "properties": {}},
        }]})),
        "tools/call" => Ok(json!({
            "content": [{"type": "text", "text": "null"}],
            "isError": false,
        })),
        "ping" => Ok(json!({})),
        _ => Err((-32601, "method not found")),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut line = String::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        // Notifications (no id) get no answer.
        let Some(id) = message.get("id").cloned() else {
            continue;
        };
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let reply = match answer(method, &params) {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, text)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": text}})
            }
        };
        let mut text = reply.to_string();
        text.push('\n');
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return;
        }
    }
}
