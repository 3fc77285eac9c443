//! JSON in, JSON out through a real component, for every WIT type kind, and
//! the JSON Schemas `inspect` derives from the WIT types.

use agentcap::consent::{DenyApprover, SessionId};
use agentcap::{LoadedTool, Runtime};
use agentcap_tests::{Workspace, shared};
use serde_json::{Value, json};

fn load(ws: &Workspace) -> (Runtime, LoadedTool) {
    ws.load_guest(
        "user = \"alice\"\n[tools.echo]\ncomponent = \"echo.wasm\"\n",
        shared(DenyApprover::new("no human in tests")),
        "echo",
        "echo_types",
    )
}

async fn echo(runtime: &Runtime, tool: &LoadedTool, function: &str, args: Value) -> Value {
    runtime
        .call(tool, &SessionId("t".into()), function, &args)
        .await
        .unwrap_or_else(|e| panic!("{function} {args}: {e}"))
        .result
}

#[tokio::test]
async fn every_type_kind_round_trips() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let cases = [
        (
            "echo-record",
            json!({"p": {"x": -3, "y": 4, "label": "here"}}),
            json!({"x": -3, "y": 4, "label": "here"}),
        ),
        (
            "echo-record",
            json!({"p": {"x": 1, "y": 2}}),
            json!({"x": 1, "y": 2, "label": null}),
        ),
        (
            "echo-variant",
            json!({"s": {"circle": 1.5}}),
            json!({"circle": 1.5}),
        ),
        (
            "echo-variant",
            json!({"s": {"rect": {"x": 0, "y": 1, "label": null}}}),
            json!({"rect": {"x": 0, "y": 1, "label": null}}),
        ),
        ("echo-variant", json!({"s": "empty"}), json!("empty")),
        ("echo-enum", json!({"c": "green"}), json!("green")),
        (
            "echo-flags",
            json!({"f": ["read", "exec"]}),
            json!(["read", "exec"]),
        ),
        ("echo-flags", json!({"f": []}), json!([])),
        (
            "echo-tuple",
            json!({"t": [255, "ü", true]}),
            json!([255, "ü", true]),
        ),
        (
            "echo-list",
            json!({"l": [1, null, -9007199254740993i64]}),
            json!([1, null, -9007199254740993i64]),
        ),
        ("echo-result", json!({"r": {"ok": 7}}), json!({"ok": 7})),
        (
            "echo-result",
            json!({"r": {"err": "no"}}),
            json!({"err": "no"}),
        ),
        ("echo-char", json!({"c": "🦀"}), json!("🦀")),
        (
            "echo-numbers",
            json!({"a": -128, "b": 65535, "c": u64::MAX, "d": 0.5}),
            json!([-128, 65535, u64::MAX, 0.5]),
        ),
        ("nothing", json!({}), Value::Null),
        ("api.greet", json!({"name": "Alice"}), json!("hello, Alice")),
    ];
    for (function, args, expected) in cases {
        assert_eq!(
            echo(&runtime, &tool, function, args.clone()).await,
            expected,
            "{function} {args}"
        );
    }
}

#[tokio::test]
async fn type_mismatches_name_the_place() {
    let ws = Workspace::new();
    let (runtime, tool) = load(&ws);
    let cases = [
        (
            "echo-record",
            json!({"p": {"x": 1}}),
            "argument p.y: expected integer (s32) (required), got nothing",
        ),
        (
            "echo-record",
            json!({"p": {"x": 1, "y": 2, "z": 3}}),
            "argument p.z: expected no such field",
        ),
        (
            "echo-variant",
            json!({"s": "square"}),
            "argument s: expected a variant case",
        ),
        (
            "echo-enum",
            json!({"c": "purple"}),
            "expected one of red, green, blue",
        ),
        ("echo-flags", json!({"f": ["fly"]}), "argument f"),
        (
            "echo-tuple",
            json!({"t": [256, "a", true]}),
            "argument t[0]: expected integer (u8), got number 256",
        ),
        ("echo-char", json!({"c": "ab"}), "a one-character string"),
        ("echo-result", json!({"r": {"maybe": 1}}), "argument r"),
        (
            "echo-numbers",
            json!({"a": 1.5, "b": 1, "c": 1, "d": 1}),
            "argument a: expected integer (s8), got number 1.5",
        ),
    ];
    for (function, args, expected) in cases {
        let err = runtime
            .call(&tool, &SessionId("t".into()), function, &args)
            .await
            .expect_err("a mismatch must be refused");
        assert!(
            err.to_string().contains(expected),
            "{function} {args}: {err}"
        );
    }
}

#[tokio::test]
async fn schemas_describe_the_wit_types() {
    let ws = Workspace::new();
    let (_runtime, tool) = load(&ws);
    let info = tool.info();
    let schema = |name: &str| info.function(name).unwrap().input_schema.clone();
    let record = &schema("echo-record")["properties"]["p"];
    assert_eq!(record["required"], json!(["x", "y"]));
    assert_eq!(record["additionalProperties"], json!(false));
    assert_eq!(record["properties"]["x"]["minimum"], json!(i32::MIN));
    assert_eq!(
        schema("echo-enum")["properties"]["c"]["enum"],
        json!(["red", "green", "blue"])
    );
    assert_eq!(
        schema("echo-flags")["properties"]["f"]["uniqueItems"],
        json!(true)
    );
    assert_eq!(
        schema("echo-tuple")["properties"]["t"]["prefixItems"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let variant = &schema("echo-variant")["properties"]["s"]["oneOf"];
    assert_eq!(variant[2], json!({"const": "empty"}));
    let result = info
        .function("echo-result")
        .unwrap()
        .output_schema
        .clone()
        .unwrap();
    assert_eq!(result["oneOf"][0]["required"], json!(["ok"]));
    assert!(info.function("nothing").unwrap().output_schema.is_none());
    assert_eq!(
        info.function("api.greet").unwrap().interface.as_deref(),
        Some("test:echo-types/api")
    );
    assert!(info.capabilities().is_empty(), "echo imports no capability");
}
