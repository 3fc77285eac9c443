//! The one wasmtime [`Engine`]: component model, epoch interruption (a
//! background ticker), pooling allocator sized for a small machine, and an
//! on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of wall-time limits and of
/// interruption.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Most instances alive at once (pooling allocator slots).
const MAX_INSTANCES: u32 = 64;
/// Largest linear memory any tool can be given.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;
/// Bytes of a freed linear memory reset in place (memset) rather than
/// returned to the kernel; beyond this, madvise.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// The shared engine plus its epoch ticker and component cache.
#[derive(Clone)]
pub struct AgentEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    _ticker: Arc<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled component and the digest of its bytes.
#[derive(Clone)]
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    /// Whether it came from the on-disk cache.
    pub from_cache: bool,
}

impl AgentEngine {
    /// Build the engine. `cache_dir` (created if missing) keeps compiled
    /// components across runs; `None` disables the cache.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<AgentEngine> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.concurrency_support(false);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 4)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 4)
            .max_memory_size(MAX_MEMORY_BYTES)
            // Reset a freed slot by zeroing the pages the call touched
            // (found with PAGEMAP_SCAN where the kernel has it) instead of
            // madvise: no TLB shootdown across cores on every call.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES / 8);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(pooling_error) => {
                // Some sandboxes cap virtual memory; fall back to on-demand.
                tracing::warn!(
                    "pooling allocator unavailable ({pooling_error:#}); using on-demand allocation"
                );
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config)
                    .map_err(anyhow::Error::from)
                    .context("create wasmtime engine")?
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.weak();
        let stop_flag = stop.clone();
        std::thread::Builder::new()
            .name("agentcap-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticking.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("start epoch ticker")?;
        if let Some(dir) = &cache_dir {
            create_private_dir(dir)?;
        }
        Ok(AgentEngine {
            engine,
            cache_dir,
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// The default cache folder: `$AGENTCAP_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/agentcap`, else `~/.cache/agentcap`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("AGENTCAP_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("agentcap"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/agentcap"))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile component bytes, through the cache when there is one.
    pub fn compile(&self, bytes: &[u8]) -> anyhow::Result<Compiled> {
        let digest = hex::encode(Sha256::digest(bytes));
        let cache_file = self.cache_dir.as_ref().map(|dir| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            self.engine
                .precompile_compatibility_hash()
                .hash(&mut hasher);
            dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
        });
        if let Some(file) = &cache_file
            && let Ok(cached) = std::fs::read(file)
        {
            // Read into memory rather than mapping the file: another process
            // replacing or damaging the entry can then never fault us.
            // SAFETY: the bytes were written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name) into
            // a folder only this user can write (see `create_private_dir`);
            // wasmtime checks the header and rejects anything else.
            match unsafe { Component::deserialize(&self.engine, &cached) } {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        digest,
                        from_cache: true,
                    });
                }
                Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e:#}", file.display()),
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| anyhow::anyhow!("not a valid WebAssembly component: {e:#}"))?;
        if let Some(file) = &cache_file
            && let Err(e) = write_cache(&component, file)
        {
            tracing::warn!(
                "could not cache compiled component at {}: {e:#}",
                file.display()
            );
        }
        Ok(Compiled {
            component,
            digest,
            from_cache: false,
        })
    }
}

fn write_cache(component: &Component, file: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let dir = file.parent().context("cache file has no folder")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(file)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create component cache folder {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restrict permissions of {}", dir.display()))?;
    }
    Ok(())
}
