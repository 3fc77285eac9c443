//! The fleet's journal: every host's hash chain, copied into PostgreSQL.
//!
//! Shape: one chain per host journal, not one chain for the fleet. Each
//! host's local journal stays the write-ahead record (an effect's intent is
//! on the host's disk before the effect starts, at the cost of one local
//! fsync, whatever the database does), and a copier task copies its
//! records, unchanged, in order and in batches, on a connection of its own, into `agentcap_fleet_journal`, keyed by
//! the chain (the hash of the journal's record #1, stable across the
//! host's processes) and the record's number. One chain for the whole
//! fleet would make every intent wait for a round trip to the database
//! and for a fleet-wide lock (appends in order), and would stop every
//! host's effects while the database is away.
//!
//! `agentcap journal --fleet verify` checks every chain in the database as
//! `journal verify` checks a local one (streamed, one chain at a time);
//! `journal --fleet tail [--follow]` shows the fleet's newest records with
//! their host; `journal export --to-fleet` copies a local journal (a host
//! that was never in the fleet, or one that left) into it.

use std::sync::Arc;

use futures_util::{StreamExt, pin_mut};
use tokio_postgres::Client;

use crate::fleet::describe;
use crate::journal::{ChainCheck, Journal, Record};
use crate::render::one_line;

/// The fleet's journal table (created with the fleet's other tables).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agentcap_fleet_journal (
    id bigserial UNIQUE,
    chain text NOT NULL CHECK (length(chain) <= 100),
    seq bigint NOT NULL,
    host text NOT NULL CHECK (length(host) <= 200),
    record text NOT NULL CHECK (length(record) <= 4000000),
    copied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (chain, seq)
);
";

/// Records copied per batch.
pub const COPIED_PER_ROUND: usize = 500;

/// Where a host's copying stands.
#[derive(Debug, Default)]
pub struct Copying {
    /// The chain (hash of record #1) and the last record copied.
    at: Option<(String, i64)>,
}

/// Copy up to `max` records of `journal` not yet in the fleet's journal,
/// as host `host`; returns how many were copied.
pub async fn copy_new(
    client: &Client,
    journal: &Arc<Journal>,
    host: &str,
    copying: &mut Copying,
    max: usize,
) -> Result<usize, String> {
    let (chain, last) = match &copying.at {
        Some(at) => at.clone(),
        None => {
            let first = read(journal, 0, 1).await?;
            let Some(first) = first.into_iter().next() else {
                return Ok(0);
            };
            let last: i64 = client
                .query_one(
                    "SELECT coalesce(max(seq), 0) FROM agentcap_fleet_journal WHERE chain = $1",
                    &[&first.hash],
                )
                .await
                .map_err(|e| describe(&e))?
                .get(0);
            (first.hash, last)
        }
    };
    let records = read(journal, last, max).await?;
    let Some(newest) = records.last().map(|r| r.seq) else {
        copying.at = Some((chain, last));
        return Ok(0);
    };
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    let texts = records
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| e.to_string())?;
    let host: String = host.chars().take(200).collect();
    // One statement for the batch: one round trip.
    client
        .execute(
            "INSERT INTO agentcap_fleet_journal (chain, seq, host, record) \
             SELECT $1, s, $3, r FROM unnest($2::bigint[], $4::text[]) AS t(s, r) \
             ON CONFLICT (chain, seq) DO NOTHING",
            &[&chain, &seqs, &host, &texts],
        )
        .await
        .map_err(|e| {
            format!(
                "copying journal records #{}-#{newest}: {}",
                last + 1,
                describe(&e)
            )
        })?;
    copying.at = Some((chain, newest));
    Ok(records.len())
}

/// Copy the host's journal into the fleet's for as long as the host is in
/// the fleet, on a connection of its own: a batch as soon as records are
/// there, a look every [`crate::fleet::HEARTBEAT`] otherwise; reconnects
/// after a failure.
pub async fn keep_copying(link: Arc<crate::fleet::FleetLink>, journal: Arc<Journal>) {
    let mut copying = Copying::default();
    // The member task creates the tables on its first connection.
    while !link.has_reached_database() {
        tokio::time::sleep(crate::fleet::HEARTBEAT).await;
    }
    loop {
        match crate::fleet::connect(link.settings(), link.base_dir()).await {
            Err(e) => tracing::debug!("the journal's copier cannot reach the fleet: {e}"),
            Ok((client, _connection)) => loop {
                match copy_new(
                    &client,
                    &journal,
                    link.host(),
                    &mut copying,
                    COPIED_PER_ROUND,
                )
                .await
                {
                    Ok(n) if n == COPIED_PER_ROUND => continue,
                    Ok(_) => tokio::time::sleep(crate::fleet::HEARTBEAT).await,
                    Err(e) => {
                        tracing::warn!("copying the journal to the fleet: {e}");
                        copying = Copying::default();
                        break;
                    }
                }
            },
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Copy what the fleet's journal still lacks of the host's (a process
/// ending), over a new connection, within `limit`.
pub async fn copy_rest(
    link: &crate::fleet::FleetLink,
    journal: &Arc<Journal>,
    limit: std::time::Duration,
) {
    let copying = async {
        let (client, _connection) = crate::fleet::connect(link.settings(), link.base_dir()).await?;
        let mut copying = Copying::default();
        while copy_new(&client, journal, link.host(), &mut copying, 1000).await? == 1000 {}
        Ok::<_, String>(())
    };
    match tokio::time::timeout(limit, copying).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("copying the journal's last records to the fleet: {e}"),
        Err(_) => tracing::warn!(
            "the journal's last records were not all copied to the fleet within {} s (`agentcap journal export --to-fleet` copies them)",
            limit.as_secs()
        ),
    }
}

async fn read(journal: &Arc<Journal>, after: i64, max: usize) -> Result<Vec<Record>, String> {
    let journal = journal.clone();
    tokio::task::spawn_blocking(move || journal.range(after, max))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// One chain of the fleet's journal, checked.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// The chain's id (the hash of its record #1).
    pub chain: String,
    /// The host that wrote it (rendered), as its newest record says.
    pub host: String,
    /// Records that held.
    pub records: i64,
    /// The first record that breaks the chain, and how.
    pub broken: Option<(i64, String)>,
    /// `call` records with no outcome among those checked.
    pub unfinished: usize,
    /// Every host name its rows carry (rendered; at most 20).
    pub hosts: Vec<String>,
}

/// Check every chain of the fleet's journal, streaming the rows.
pub async fn verify(client: &Client) -> Result<Vec<ChainReport>, String> {
    let rows = client
        .query_raw(
            "SELECT chain, seq, left(host, 200), record FROM agentcap_fleet_journal ORDER BY chain, seq",
            std::iter::empty::<i64>(),
        )
        .await
        .map_err(|e| describe(&e))?;
    pin_mut!(rows);
    let mut reports: Vec<ChainReport> = Vec::new();
    let mut check = ChainCheck::default();
    let mut calls = std::collections::HashSet::new();
    let finish = |reports: &mut Vec<ChainReport>,
                  check: &mut ChainCheck,
                  calls: &mut std::collections::HashSet<i64>| {
        if let Some(last) = reports.last_mut() {
            last.records = check.records;
            last.broken = check.broken.clone();
            last.unfinished = calls.len();
        }
        *check = ChainCheck::default();
        calls.clear();
    };
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| describe(&e))?;
        let chain: String = row.get(0);
        let seq: i64 = row.get(1);
        if reports.last().is_none_or(|r| r.chain != chain) {
            finish(&mut reports, &mut check, &mut calls);
            reports.push(ChainReport {
                chain: chain.clone(),
                host: String::new(),
                records: 0,
                broken: None,
                unfinished: 0,
                hosts: Vec::new(),
            });
        }
        // The host label is not part of the chain (a host without a name
        // of its own is named by its process, which changes with each
        // start): every label its rows carry is reported.
        let host = one_line(row.get(2), 200);
        if let Some(last) = reports.last_mut() {
            if !last.hosts.contains(&host) && last.hosts.len() < 20 {
                last.hosts.push(host.clone());
            }
            last.host = host;
        }
        if check.broken.is_some() {
            continue;
        }
        match serde_json::from_str::<Record>(row.get(3)) {
            Err(e) => check.broken = Some((seq, format!("the record cannot be read ({e})"))),
            Ok(record) if record.seq != seq => {
                check.broken = Some((
                    seq,
                    format!("the row says #{seq} but holds record #{}", record.seq),
                ))
            }
            Ok(record) if record.seq == 1 && record.hash != chain => {
                check.broken = Some((
                    seq,
                    "the chain's id is not the hash of its record #1 (a chain planted or renamed in the database)".to_string(),
                ))
            }
            Ok(record) => {
                if check.next(&record) {
                    if record.kind == "call" {
                        calls.insert(record.seq);
                    } else if record.kind == "outcome"
                        && let Some(call) = record.ref_seq
                    {
                        calls.remove(&call);
                    }
                }
            }
        }
    }
    finish(&mut reports, &mut check, &mut calls);
    Ok(reports)
}

/// A record of the fleet's journal and the host that wrote it.
#[derive(Debug, Clone)]
pub struct FleetRecord {
    /// Its position in the fleet's journal (order of copying).
    pub id: i64,
    /// The host (rendered).
    pub host: String,
    /// The record, or why it cannot be read.
    pub record: Result<Record, String>,
}

impl FleetRecord {
    /// One line for humans: the host, then the record's own line.
    pub fn summary_line(&self) -> String {
        match &self.record {
            Ok(r) => format!("[{}] {}", self.host, r.summary_line()),
            Err(why) => format!(
                "[{}] an unreadable record: {}",
                self.host,
                one_line(why, 300)
            ),
        }
    }
}

/// The newest `n` records of the fleet (`after`: only those copied after
/// that id), oldest first.
pub async fn tail(client: &Client, n: i64, after: Option<i64>) -> Result<Vec<FleetRecord>, String> {
    let rows = client
        .query(
            "SELECT id, left(host, 200), record FROM agentcap_fleet_journal \
             WHERE id > $1 ORDER BY id DESC LIMIT $2",
            &[&after.unwrap_or(0), &n],
        )
        .await
        .map_err(|e| describe(&e))?;
    let mut records: Vec<FleetRecord> = rows
        .iter()
        .map(|row| FleetRecord {
            id: row.get(0),
            host: one_line(row.get(1), 200),
            record: serde_json::from_str::<Record>(row.get(2)).map_err(|e| e.to_string()),
        })
        .collect();
    records.reverse();
    Ok(records)
}
