//! WIT types as JSON: JSON Schema for a tool function's parameters and
//! results, and conversion of JSON arguments to component values (with
//! errors that say where and what) and of results back to JSON.
//!
//! Mapping: records are objects keyed by field name; lists and tuples are
//! arrays; enums are strings; a variant case without payload is its name as a
//! string, with payload `{"case": payload}`; `option<T>` is `null` or `T`;
//! `result<T, E>` is `{"ok": T}` or `{"err": E}`; flags are arrays of flag
//! names; maps are arrays of `[key, value]` pairs. Resources, futures and
//! streams cannot cross a JSON boundary and make a function unavailable.

use serde_json::{Map, Value, json};
use wasmtime::component::{Type, Val};

/// A WIT type that has no JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type {0} cannot be passed as JSON")]
pub struct Unsupported(pub String);

/// An argument that does not match its WIT type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {path}: expected {expected}, got {got}")]
pub struct ArgumentError {
    /// Where in the arguments (`folder`, `plan[2].id`, ...).
    pub path: String,
    /// What the WIT type wants.
    pub expected: String,
    /// What was given.
    pub got: String,
}

fn describe_json(v: &Value) -> String {
    let text = match v {
        Value::Null => return "null".into(),
        Value::Bool(b) => return format!("boolean {b}"),
        Value::Number(n) => return format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(a) => return format!("array of {} item(s)", a.len()),
        Value::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).take(5).collect();
            return format!("object with keys [{}]", keys.join(", "));
        }
    };
    if text.len() > 60 {
        let mut end = 57;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    }
}

fn int_schema(min: i128, max: i128) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

/// JSON Schema for a WIT type.
pub fn schema_of(ty: &Type) -> Result<Value, Unsupported> {
    Ok(match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 => int_schema(i8::MIN.into(), i8::MAX.into()),
        Type::U8 => int_schema(0, u8::MAX.into()),
        Type::S16 => int_schema(i16::MIN.into(), i16::MAX.into()),
        Type::U16 => int_schema(0, u16::MAX.into()),
        Type::S32 => int_schema(i32::MIN.into(), i32::MAX.into()),
        Type::U32 => int_schema(0, u32::MAX.into()),
        Type::S64 => int_schema(i64::MIN.into(), i64::MAX.into()),
        Type::U64 => int_schema(0, u64::MAX.into()),
        Type::Float32 | Type::Float64 => json!({"type": "number"}),
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(list) => json!({"type": "array", "items": schema_of(&list.ty())?}),
        Type::FixedLengthList(list) => json!({
            "type": "array",
            "items": schema_of(&list.ty())?,
            "minItems": list.len(),
            "maxItems": list.len(),
        }),
        Type::Map(map) => json!({
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [schema_of(&map.key())?, schema_of(&map.value())?],
                "minItems": 2,
                "maxItems": 2,
            },
        }),
        Type::Record(record) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in record.fields() {
                properties.insert(field.name.to_string(), schema_of(&field.ty)?);
                if !matches!(field.ty, Type::Option(_)) {
                    required.push(Value::String(field.name.to_string()));
                }
            }
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            })
        }
        Type::Tuple(tuple) => {
            let items: Vec<Value> = tuple
                .types()
                .map(|t| schema_of(&t))
                .collect::<Result<_, _>>()?;
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "minItems": n, "maxItems": n})
        }
        Type::Variant(variant) => {
            let cases: Vec<Value> = variant
                .cases()
                .map(|case| {
                    Ok(match &case.ty {
                        None => json!({"const": case.name}),
                        Some(ty) => json!({
                            "type": "object",
                            "properties": {case.name: schema_of(ty)?},
                            "required": [case.name],
                            "additionalProperties": false,
                        }),
                    })
                })
                .collect::<Result<_, Unsupported>>()?;
            json!({"oneOf": cases})
        }
        Type::Enum(e) => json!({"type": "string", "enum": e.names().collect::<Vec<_>>()}),
        Type::Option(option) => json!({"anyOf": [schema_of(&option.ty())?, {"type": "null"}]}),
        Type::Result(result) => {
            let arm = |name: &str, ty: Option<Type>| -> Result<Value, Unsupported> {
                let inner = match ty {
                    Some(ty) => schema_of(&ty)?,
                    None => json!({"type": "null"}),
                };
                Ok(json!({
                    "type": "object",
                    "properties": {name: inner},
                    "required": [name],
                    "additionalProperties": false,
                }))
            };
            json!({"oneOf": [arm("ok", result.ok())?, arm("err", result.err())?]})
        }
        Type::Flags(flags) => json!({
            "type": "array",
            "items": {"type": "string", "enum": flags.names().collect::<Vec<_>>()},
            "uniqueItems": true,
        }),
        Type::Own(_) | Type::Borrow(_) => return Err(Unsupported("resource handle".into())),
        Type::Future(_) => return Err(Unsupported("future".into())),
        Type::Stream(_) => return Err(Unsupported("stream".into())),
        Type::ErrorContext => return Err(Unsupported("error-context".into())),
    })
}

fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "boolean".into(),
        Type::S8
        | Type::U8
        | Type::S16
        | Type::U16
        | Type::S32
        | Type::U32
        | Type::S64
        | Type::U64 => {
            format!("integer ({})", int_name(ty))
        }
        Type::Float32 | Type::Float64 => "number".into(),
        Type::Char => "a one-character string".into(),
        Type::String => "string".into(),
        Type::List(_)
        | Type::FixedLengthList(_)
        | Type::Tuple(_)
        | Type::Flags(_)
        | Type::Map(_) => "array".into(),
        Type::Record(_) => "object".into(),
        Type::Variant(_) => "a variant case".into(),
        Type::Enum(e) => format!("one of {}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(o) => format!("null or {}", type_name(&o.ty())),
        Type::Result(_) => "{\"ok\": ...} or {\"err\": ...}".into(),
        Type::Own(_) | Type::Borrow(_) => "resource handle".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

fn int_name(ty: &Type) -> &'static str {
    match ty {
        Type::S8 => "s8",
        Type::U8 => "u8",
        Type::S16 => "s16",
        Type::U16 => "u16",
        Type::S32 => "s32",
        Type::U32 => "u32",
        Type::S64 => "s64",
        _ => "u64",
    }
}

fn mismatch(path: &str, ty: &Type, got: &Value) -> ArgumentError {
    ArgumentError {
        path: path.to_string(),
        expected: type_name(ty),
        got: describe_json(got),
    }
}

fn int<T: TryFrom<i128>>(path: &str, ty: &Type, v: &Value) -> Result<T, ArgumentError> {
    let n: Option<i128> = v
        .as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from));
    n.and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| mismatch(path, ty, v))
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Convert JSON to a value of WIT type `ty`; `path` names the argument.
pub fn json_to_val(ty: &Type, v: &Value, path: &str) -> Result<Val, ArgumentError> {
    let err = || mismatch(path, ty, v);
    Ok(match ty {
        Type::Bool => Val::Bool(v.as_bool().ok_or_else(err)?),
        Type::S8 => Val::S8(int(path, ty, v)?),
        Type::U8 => Val::U8(int(path, ty, v)?),
        Type::S16 => Val::S16(int(path, ty, v)?),
        Type::U16 => Val::U16(int(path, ty, v)?),
        Type::S32 => Val::S32(int(path, ty, v)?),
        Type::U32 => Val::U32(int(path, ty, v)?),
        Type::S64 => Val::S64(int(path, ty, v)?),
        Type::U64 => Val::U64(int(path, ty, v)?),
        Type::Float32 => Val::Float32(v.as_f64().ok_or_else(err)? as f32),
        Type::Float64 => Val::Float64(v.as_f64().ok_or_else(err)?),
        Type::Char => {
            let s = v.as_str().ok_or_else(err)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(err()),
            }
        }
        Type::String => Val::String(v.as_str().ok_or_else(err)?.to_string()),
        Type::List(list) => {
            let items = v.as_array().ok_or_else(err)?;
            let elem = list.ty();
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| json_to_val(&elem, item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::FixedLengthList(list) => {
            let items = v.as_array().ok_or_else(err)?;
            if items.len() != list.len() as usize {
                return Err(ArgumentError {
                    path: path.to_string(),
                    expected: format!("array of exactly {} item(s)", list.len()),
                    got: describe_json(v),
                });
            }
            let elem = list.ty();
            Val::FixedLengthList(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| json_to_val(&elem, item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Map(map) => {
            let pairs = v.as_array().ok_or_else(err)?;
            let (kt, vt) = (map.key(), map.value());
            Val::Map(
                pairs
                    .iter()
                    .enumerate()
                    .map(|(i, pair)| {
                        let at = format!("{path}[{i}]");
                        match pair.as_array().map(Vec::as_slice) {
                            Some([k, val]) => Ok((
                                json_to_val(&kt, k, &format!("{at}[0]"))?,
                                json_to_val(&vt, val, &format!("{at}[1]"))?,
                            )),
                            _ => Err(ArgumentError {
                                path: at,
                                expected: "a [key, value] pair".into(),
                                got: describe_json(pair),
                            }),
                        }
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(record) => {
            let object = v.as_object().ok_or_else(err)?;
            let fields: Vec<_> = record.fields().collect();
            if let Some(unknown) = object
                .keys()
                .find(|k| !fields.iter().any(|f| f.name == k.as_str()))
            {
                return Err(ArgumentError {
                    path: child(path, unknown),
                    expected: format!(
                        "no such field (fields: {})",
                        fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                    ),
                    got: describe_json(&object[unknown]),
                });
            }
            Val::Record(
                fields
                    .iter()
                    .map(|f| {
                        let at = child(path, f.name);
                        let value = object.get(f.name).unwrap_or(&Value::Null);
                        if value.is_null() && !matches!(f.ty, Type::Option(_)) {
                            return Err(ArgumentError {
                                path: at,
                                expected: format!("{} (required)", type_name(&f.ty)),
                                got: "nothing".into(),
                            });
                        }
                        Ok((f.name.to_string(), json_to_val(&f.ty, value, &at)?))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Tuple(tuple) => {
            let items = v.as_array().ok_or_else(err)?;
            if items.len() != tuple.types().len() {
                return Err(err());
            }
            Val::Tuple(
                tuple
                    .types()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, item))| json_to_val(&t, item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Variant(variant) => {
            let (name, payload) = match v {
                Value::String(s) => (s.as_str(), None),
                Value::Object(o) if o.len() == 1 => {
                    let (k, p) = o.iter().next().expect("one entry");
                    (k.as_str(), Some(p))
                }
                _ => return Err(err()),
            };
            let case = variant.cases().find(|c| c.name == name).ok_or_else(err)?;
            let payload = match (&case.ty, payload) {
                (None, None) => None,
                (None, Some(p)) if p.is_null() => None,
                (Some(ty), Some(p)) => Some(Box::new(json_to_val(ty, p, &child(path, name))?)),
                _ => return Err(err()),
            };
            Val::Variant(name.to_string(), payload)
        }
        Type::Enum(e) => {
            let s = v.as_str().ok_or_else(err)?;
            if !e.names().any(|n| n == s) {
                return Err(err());
            }
            Val::Enum(s.to_string())
        }
        Type::Option(option) => match v {
            Value::Null => Val::Option(None),
            some => Val::Option(Some(Box::new(json_to_val(&option.ty(), some, path)?))),
        },
        Type::Result(result) => {
            let o = v.as_object().filter(|o| o.len() == 1).ok_or_else(err)?;
            let (k, p) = o.iter().next().expect("one entry");
            let arm = |ty: Option<Type>, name: &str| -> Result<Option<Box<Val>>, ArgumentError> {
                match ty {
                    Some(ty) => Ok(Some(Box::new(json_to_val(&ty, p, &child(path, name))?))),
                    None if p.is_null() => Ok(None),
                    None => Err(err()),
                }
            };
            match k.as_str() {
                "ok" => Val::Result(Ok(arm(result.ok(), "ok")?)),
                "err" => Val::Result(Err(arm(result.err(), "err")?)),
                _ => return Err(err()),
            }
        }
        Type::Flags(flags) => {
            let items = v.as_array().ok_or_else(err)?;
            let mut set = Vec::new();
            for item in items {
                let s = item.as_str().ok_or_else(err)?;
                if !flags.names().any(|n| n == s) {
                    return Err(err());
                }
                set.push(s.to_string());
            }
            Val::Flags(set)
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(err());
        }
    })
}

/// Convert a component value to JSON.
pub fn val_to_json(v: &Val) -> Value {
    match v {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        Val::Float64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(val_to_json).collect())
        }
        Val::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| json!([val_to_json(k), val_to_json(v)]))
                .collect(),
        ),
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), val_to_json(v)))
                .collect(),
        ),
        Val::Variant(name, None) => json!(name),
        Val::Variant(name, Some(p)) => json!({ name: val_to_json(p) }),
        Val::Enum(name) => json!(name),
        Val::Option(None) => Value::Null,
        Val::Option(Some(v)) => val_to_json(v),
        Val::Result(Ok(v)) => json!({"ok": v.as_deref().map_or(Value::Null, val_to_json)}),
        Val::Result(Err(v)) => json!({"err": v.as_deref().map_or(Value::Null, val_to_json)}),
        Val::Flags(names) => json!(names),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            json!("<handle>")
        }
    }
}
