//! The embedded store's operations, written once over a minimal table
//! interface that both embedded backends (a redb file, maps in memory)
//! provide. Values are JSON; a write transaction applies all or nothing.

use baton_policy::{
    ContactState, HealthReport, HistoryEntry, LearningConfig, Outcome, OutcomeWindow, UnixMs,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Acknowledged, Commit, DeferredChange, Loaded, OutcomeRecorded, RouteKey, StoreError,
    StoredDecision, acknowledge_entry, outcome_entry,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Contacts,
    /// Keyed `contact_id \0 source \0 request_id` (see [`crate::request_key`]):
    /// request ids are scoped to their contact and source bot.
    Decisions,
    /// Handoff id → contact id.
    Handoffs,
    Outcomes,
    Health,
    /// Contact id → the bot its deferred handoff waits for.
    Deferred,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Contacts,
        Table::Decisions,
        Table::Handoffs,
        Table::Outcomes,
        Table::Health,
        Table::Deferred,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Contacts => "contacts",
            Table::Decisions => "decisions",
            Table::Handoffs => "handoffs",
            Table::Outcomes => "outcomes",
            Table::Health => "health",
            Table::Deferred => "deferred",
        }
    }
}

pub trait Read {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

pub trait Write: Read {
    fn put(&mut self, table: Table, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    fn remove(&mut self, table: Table, key: &str) -> Result<(), StoreError>;
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data structs to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { what, source })
}

fn get<T: DeserializeOwned>(
    r: &dyn Read,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    r.get(table, key)?
        .map(|v| decode(table.name(), &v))
        .transpose()
}

fn decision_key(contact_id: &str, request_id: &str) -> String {
    format!("{contact_id}\0{request_id}")
}

pub fn contact(r: &dyn Read, contact_id: &str) -> Result<Option<ContactState>, StoreError> {
    get(r, Table::Contacts, contact_id)
}

pub fn load(
    r: &dyn Read,
    contact_id: &str,
    request_id: &str,
    now: UnixMs,
) -> Result<Loaded, StoreError> {
    let contact = contact(r, contact_id)?;
    let mut prior = None;
    if !request_id.is_empty() {
        let stored: Option<StoredDecision> =
            get(r, Table::Decisions, &decision_key(contact_id, request_id))?;
        prior = stored.filter(|d| d.expires_at > now).map(|d| d.verdict);
    }
    Ok(Loaded { contact, prior })
}

pub fn commit(w: &mut dyn Write, commit: &Commit) -> Result<(), StoreError> {
    if let Some(contact) = &commit.contact {
        w.put(Table::Contacts, &commit.contact_id, encode(contact))?;
    }
    if let Some((request_id, decision)) = &commit.decision {
        w.put(
            Table::Decisions,
            &decision_key(&commit.contact_id, request_id),
            encode(decision),
        )?;
    }
    if let Some(handoff_id) = &commit.handoff_id {
        w.put(
            Table::Handoffs,
            handoff_id,
            commit.contact_id.clone().into_bytes(),
        )?;
    }
    match &commit.deferred {
        Some(DeferredChange::Add(target)) => w.put(
            Table::Deferred,
            &commit.contact_id,
            target.clone().into_bytes(),
        )?,
        Some(DeferredChange::Remove) => w.remove(Table::Deferred, &commit.contact_id)?,
        None => {}
    }
    Ok(())
}

pub fn deferred(r: &dyn Read) -> Result<Vec<(String, String)>, StoreError> {
    Ok(r.scan(Table::Deferred)?
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect())
}

/// Finds a handoff's contact and runs `f` on its history entry, saving the contact.
fn update_entry<T>(
    w: &mut dyn Write,
    handoff_id: &str,
    f: impl FnOnce(&mut HistoryEntry) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let not_found = || StoreError::NotFound {
        what: "handoff",
        id: handoff_id.to_owned(),
    };
    let contact_id = w.get(Table::Handoffs, handoff_id)?.ok_or_else(not_found)?;
    let contact_id = String::from_utf8_lossy(&contact_id).into_owned();
    let mut contact = contact(&*w, &contact_id)?.ok_or_else(not_found)?;
    let out = f(contact.entry_mut(handoff_id).ok_or_else(not_found)?)?;
    w.put(Table::Contacts, &contact_id, encode(&contact))?;
    Ok(out)
}

/// The contact a handoff belongs to, if the handoff is indexed.
pub fn handoff_contact(r: &dyn Read, handoff_id: &str) -> Result<Option<String>, StoreError> {
    Ok(r.get(Table::Handoffs, handoff_id)?
        .map(|c| String::from_utf8_lossy(&c).into_owned()))
}

pub fn acknowledge(
    w: &mut dyn Write,
    handoff_id: &str,
    bot: &str,
    now: UnixMs,
) -> Result<Acknowledged, StoreError> {
    update_entry(w, handoff_id, |entry| {
        acknowledge_entry(entry, bot, now).map(|(ack, _)| ack)
    })
}

pub fn record_outcome(
    w: &mut dyn Write,
    handoff_id: &str,
    outcome: Outcome,
    config: &LearningConfig,
) -> Result<OutcomeRecorded, StoreError> {
    let (key, fresh) = update_entry(w, handoff_id, |entry| Ok(outcome_entry(entry, outcome)))?;
    let encoded = key.encode();
    let mut window: OutcomeWindow = get(&*w, Table::Outcomes, &encoded)?.unwrap_or_default();
    if fresh {
        window.record(outcome, config);
        w.put(Table::Outcomes, &encoded, encode(&window))?;
    }
    Ok(OutcomeRecorded {
        key,
        window,
        recorded: fresh,
    })
}

pub fn outcome_windows(r: &dyn Read) -> Result<Vec<(RouteKey, OutcomeWindow)>, StoreError> {
    let mut out = Vec::new();
    for (k, v) in r.scan(Table::Outcomes)? {
        if let Some(key) = RouteKey::decode(&k) {
            out.push((key, decode("outcome window", &v)?));
        }
    }
    Ok(out)
}

pub fn put_health(w: &mut dyn Write, report: &HealthReport) -> Result<(), StoreError> {
    w.put(Table::Health, &report.bot, encode(report))
}

pub fn health_reports(r: &dyn Read) -> Result<Vec<HealthReport>, StoreError> {
    r.scan(Table::Health)?
        .iter()
        .map(|(_, v)| decode("health report", v))
        .collect()
}

pub fn purge_expired(w: &mut dyn Write, now: UnixMs) -> Result<usize, StoreError> {
    let mut removed = 0;
    for (k, v) in w.scan(Table::Decisions)? {
        let live = serde_json::from_slice::<StoredDecision>(&v).is_ok_and(|d| d.expires_at > now);
        if !live {
            w.remove(Table::Decisions, &k)?;
            removed += 1;
        }
    }
    Ok(removed)
}
