//! The on-disk cache of compiled components: a second load comes from the
//! cache, and a damaged cache entry is ignored (recompiled), never trusted
//! into a crash.

use agentcap::AgentEngine;
use agentcap_tests::guest;

#[test]
fn second_load_is_cached_and_a_damaged_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("echo_types")).unwrap();
    let engine = AgentEngine::new(Some(cache.path().to_path_buf())).unwrap();
    let first = engine.compile(&bytes).unwrap();
    assert!(!first.from_cache);
    let second = engine.compile(&bytes).unwrap();
    assert!(second.from_cache);
    assert_eq!(first.digest, second.digest);
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1);
    let name = entries[0].file_name().into_string().unwrap();
    assert!(
        name.starts_with(&first.digest) && name.ends_with(".cwasm"),
        "{name}"
    );
    std::fs::write(entries[0].path(), b"garbage, not a compiled component").unwrap();
    let third = engine.compile(&bytes).unwrap();
    assert!(!third.from_cache, "a damaged entry must not be used");
    assert!(
        engine.compile(&bytes).unwrap().from_cache,
        "and it is rewritten"
    );
}
