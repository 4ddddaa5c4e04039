//! The embedded store's operations, written once over a minimal table
//! interface that both embedded backends (a redb file, maps in memory)
//! provide. Values are JSON; a write transaction applies all or nothing.

use baton_policy::{
    ContactState, ContextPacket, HealthReport, HistoryEntry, LearningConfig, Outcome,
    OutcomeWindow, UnixMs,
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
    /// Handoff id → contact id, for handoffs approved before ids carried
    /// their contact ([`crate::handoff_contact_id`]): read, never written.
    Handoffs,
    Outcomes,
    Health,
    /// Contact id → the bot its deferred handoff waits for.
    Deferred,
    /// The expiry index: `{at:016x}\0{kind}\0{key}` → nothing, so what
    /// expired is found by a range read from the start, never a full scan.
    Expiry,
    /// `{kind}\0{key}` → when it was last written (unix ms), for what is
    /// kept while active: contacts (`c`) and outcome windows (`o`).
    Touched,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Contacts,
        Table::Decisions,
        Table::Handoffs,
        Table::Outcomes,
        Table::Health,
        Table::Deferred,
        Table::Expiry,
        Table::Touched,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Contacts => "contacts",
            Table::Decisions => "decisions",
            Table::Handoffs => "handoffs",
            Table::Outcomes => "outcomes",
            Table::Health => "health",
            Table::Deferred => "deferred",
            Table::Expiry => "expiry",
            Table::Touched => "touched",
        }
    }
}

pub trait Read {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// At most `limit` rows with `from <= key < to`, in key order.
    fn range(
        &self,
        table: Table,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
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

/// How long what the store keeps while active lives after its last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// The store's clock at the write.
    pub now: UnixMs,
    /// Retention in milliseconds.
    pub retention: i64,
}

impl Keep {
    fn until(self) -> UnixMs {
        self.now.saturating_add(self.retention)
    }
}

/// What the expiry index points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Contact,
    Context,
    Decision,
    /// A handoff's legacy index entry: kept while its contact's history
    /// holds it.
    Handoff,
    Outcomes,
}

impl Kind {
    fn tag(self) -> char {
        match self {
            Kind::Contact => 'c',
            Kind::Context => 'x',
            Kind::Decision => 'd',
            Kind::Handoff => 'h',
            Kind::Outcomes => 'o',
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        Some(match tag {
            "c" => Kind::Contact,
            "x" => Kind::Context,
            "d" => Kind::Decision,
            "h" => Kind::Handoff,
            "o" => Kind::Outcomes,
            _ => return None,
        })
    }
}

fn at_key(at: UnixMs) -> String {
    format!("{:016x}", at.max(0))
}

fn expiry_entry(at: UnixMs, kind: Kind, key: &str) -> String {
    format!("{}\0{}\0{key}", at_key(at), kind.tag())
}

fn expire_at(w: &mut dyn Write, at: UnixMs, kind: Kind, key: &str) -> Result<(), StoreError> {
    w.put(Table::Expiry, &expiry_entry(at, kind, key), Vec::new())
}

fn touched_key(kind: Kind, key: &str) -> String {
    format!("{}\0{key}", kind.tag())
}

/// Records activity on `key`: it is kept until `keep.until()` at least.
fn touch(w: &mut dyn Write, kind: Kind, key: &str, keep: Keep) -> Result<(), StoreError> {
    w.put(
        Table::Touched,
        &touched_key(kind, key),
        keep.now.to_string().into_bytes(),
    )?;
    expire_at(w, keep.until(), kind, key)
}

fn touched(r: &dyn Read, kind: Kind, key: &str) -> Result<Option<UnixMs>, StoreError> {
    Ok(r.get(Table::Touched, &touched_key(kind, key))?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
}

/// Saves a contact and indexes when it and its context expire.
fn put_contact(
    w: &mut dyn Write,
    contact_id: &str,
    contact: &ContactState,
    keep: Keep,
) -> Result<(), StoreError> {
    w.put(Table::Contacts, contact_id, encode(contact))?;
    if contact.context != ContextPacket::default() && contact.context_expires_at > 0 {
        expire_at(w, contact.context_expires_at, Kind::Context, contact_id)?;
    }
    expire_at(w, keep.until(), Kind::Contact, contact_id)
}

/// Removes a handoff's legacy index entry if it points at `contact_id`.
fn remove_handoff(w: &mut dyn Write, handoff_id: &str, contact_id: &str) -> Result<(), StoreError> {
    if indexed_contact(&*w, handoff_id)?.as_deref() == Some(contact_id) {
        w.remove(Table::Handoffs, handoff_id)?;
    }
    Ok(())
}

pub fn commit(w: &mut dyn Write, commit: &Commit, keep: Keep) -> Result<(), StoreError> {
    if let Some(contact) = &commit.contact {
        put_contact(w, &commit.contact_id, contact, keep)?;
    }
    if let Some((request_id, decision)) = &commit.decision {
        let key = decision_key(&commit.contact_id, request_id);
        w.put(Table::Decisions, &key, encode(decision))?;
        expire_at(w, decision.expires_at, Kind::Decision, &key)?;
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
    keep: Keep,
    f: impl FnOnce(&mut HistoryEntry) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let not_found = || StoreError::NotFound {
        what: "handoff",
        id: handoff_id.to_owned(),
    };
    let contact_id = handoff_contact(&*w, handoff_id)?.ok_or_else(not_found)?;
    let mut contact = contact(&*w, &contact_id)?.ok_or_else(not_found)?;
    let out = f(contact.entry_mut(handoff_id).ok_or_else(not_found)?)?;
    put_contact(w, &contact_id, &contact, keep)?;
    Ok(out)
}

/// The contact a handoff id names: from the id itself, or for an id
/// without its contact, from the legacy index.
pub fn handoff_contact(r: &dyn Read, handoff_id: &str) -> Result<Option<String>, StoreError> {
    match crate::handoff_contact_id(handoff_id) {
        Some(contact_id) => Ok(Some(contact_id.to_owned())),
        None => indexed_contact(r, handoff_id),
    }
}

/// The contact the legacy index holds for a handoff.
fn indexed_contact(r: &dyn Read, handoff_id: &str) -> Result<Option<String>, StoreError> {
    Ok(r.get(Table::Handoffs, handoff_id)?
        .map(|c| String::from_utf8_lossy(&c).into_owned()))
}

pub fn acknowledge(
    w: &mut dyn Write,
    handoff_id: &str,
    bot: &str,
    now: UnixMs,
    keep: Keep,
) -> Result<Acknowledged, StoreError> {
    update_entry(w, handoff_id, keep, |entry| {
        acknowledge_entry(entry, bot, now).map(|(ack, _)| ack)
    })
}

pub fn record_outcome(
    w: &mut dyn Write,
    handoff_id: &str,
    outcome: Outcome,
    config: &LearningConfig,
    keep: Keep,
) -> Result<OutcomeRecorded, StoreError> {
    let (key, fresh) = update_entry(w, handoff_id, keep, |entry| {
        let (key, fresh) = outcome_entry(entry, outcome);
        if fresh {
            entry.outcome_at = Some(keep.now);
        }
        Ok((key, fresh))
    })?;
    let encoded = key.encode();
    let mut window: OutcomeWindow = get(&*w, Table::Outcomes, &encoded)?.unwrap_or_default();
    if fresh {
        window.record(outcome, config);
        w.put(Table::Outcomes, &encoded, encode(&window))?;
        touch(w, Kind::Outcomes, &encoded, keep)?;
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

/// One entry of the expiry index that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    entry: String,
    kind: Kind,
    key: String,
}

impl Due {
    /// The contact whose lock deleting this needs, if any.
    pub fn contact(&self) -> Option<&str> {
        match self.kind {
            Kind::Contact | Kind::Context => Some(&self.key),
            Kind::Decision | Kind::Handoff | Kind::Outcomes => None,
        }
    }
}

/// At most `limit` expiry-index entries due at `now`, oldest first.
pub fn due(r: &dyn Read, now: UnixMs, limit: usize) -> Result<Vec<Due>, StoreError> {
    let until = at_key(now.saturating_add(1));
    let rows = r.range(Table::Expiry, "", &until, limit)?;
    Ok(rows
        .into_iter()
        .map(|(entry, _)| {
            let mut parts = entry.splitn(3, '\0');
            let (_, tag, key) = (parts.next(), parts.next(), parts.next());
            let kind = tag.and_then(Kind::from_tag);
            let key = key.unwrap_or_default().to_owned();
            (entry, kind, key)
        })
        .map(|(entry, kind, key)| Due {
            entry,
            // An entry this version cannot read is dropped like a stale one.
            kind: kind.unwrap_or(Kind::Decision),
            key,
        })
        .collect())
}

/// Deletes what `due` points at if it is still expired (it may have been
/// written again since), and the index entry itself; returns how many
/// records were deleted.
pub fn expire(w: &mut dyn Write, due: &[Due], keep: Keep) -> Result<usize, StoreError> {
    let mut removed = 0;
    for d in due {
        w.remove(Table::Expiry, &d.entry)?;
        removed += match d.kind {
            Kind::Decision => expire_decision(w, &d.key, keep.now)?,
            Kind::Context => expire_context(w, &d.key, keep.now)?,
            Kind::Contact => expire_contact(w, &d.key, keep)?,
            Kind::Handoff => expire_handoff(w, &d.key, keep)?,
            Kind::Outcomes => expire_outcomes(w, &d.key, keep)?,
        };
    }
    Ok(removed)
}

fn expire_decision(w: &mut dyn Write, key: &str, now: UnixMs) -> Result<usize, StoreError> {
    let Some(bytes) = w.get(Table::Decisions, key)? else {
        return Ok(0);
    };
    let live = serde_json::from_slice::<StoredDecision>(&bytes).is_ok_and(|d| d.expires_at > now);
    if live {
        return Ok(0);
    }
    w.remove(Table::Decisions, key)?;
    Ok(1)
}

fn expire_context(w: &mut dyn Write, contact_id: &str, now: UnixMs) -> Result<usize, StoreError> {
    let Some(mut contact) = self::contact(&*w, contact_id)? else {
        return Ok(0);
    };
    if contact.context_expires_at > now || contact.context == ContextPacket::default() {
        return Ok(0);
    }
    contact.context = ContextPacket::default();
    w.put(Table::Contacts, contact_id, encode(&contact))?;
    Ok(1)
}

fn idle(r: &dyn Read, kind: Kind, key: &str, keep: Keep) -> Result<bool, StoreError> {
    Ok(touched(r, kind, key)?.is_none_or(|at| at.saturating_add(keep.retention) <= keep.now))
}

/// Deletes an idle contact with its stored decisions, deferral, activity
/// record and any handoff index entries an earlier version wrote.
fn expire_contact(w: &mut dyn Write, contact_id: &str, keep: Keep) -> Result<usize, StoreError> {
    let Some(contact) = self::contact(&*w, contact_id)? else {
        return Ok(0);
    };
    // Written again since this entry: a later one stands for it.
    if contact.last_active().saturating_add(keep.retention) > keep.now {
        return Ok(0);
    }
    for entry in &contact.history {
        remove_handoff(w, &entry.handoff_id, contact_id)?;
    }
    w.remove(Table::Contacts, contact_id)?;
    let mut removed = 1;
    let from = format!("{contact_id}\0");
    let to = format!("{contact_id}\u{1}");
    loop {
        let rows = w.range(Table::Decisions, &from, &to, 256)?;
        if rows.is_empty() {
            break;
        }
        for (key, value) in rows {
            if let Ok(d) = serde_json::from_slice::<StoredDecision>(&value) {
                w.remove(
                    Table::Expiry,
                    &expiry_entry(d.expires_at, Kind::Decision, &key),
                )?;
            }
            w.remove(Table::Decisions, &key)?;
            removed += 1;
        }
    }
    w.remove(Table::Deferred, contact_id)?;
    Ok(removed)
}

/// Deletes a handoff's index entry once its contact's history no longer
/// holds the handoff (trimmed, or the contact is gone); while it does, the
/// entry is looked at again a retention period later.
fn expire_handoff(w: &mut dyn Write, handoff_id: &str, keep: Keep) -> Result<usize, StoreError> {
    let Some(contact_id) = indexed_contact(&*w, handoff_id)? else {
        return Ok(0);
    };
    let held = self::contact(&*w, &contact_id)?
        .is_some_and(|c| c.history.iter().any(|e| e.handoff_id == handoff_id));
    if held {
        expire_at(w, keep.until(), Kind::Handoff, handoff_id)?;
        return Ok(0);
    }
    w.remove(Table::Handoffs, handoff_id)?;
    Ok(1)
}

/// Deletes an outcome window no outcome reached for the retention period.
fn expire_outcomes(w: &mut dyn Write, key: &str, keep: Keep) -> Result<usize, StoreError> {
    if !idle(&*w, Kind::Outcomes, key, keep)? {
        return Ok(0);
    }
    w.remove(Table::Touched, &touched_key(Kind::Outcomes, key))?;
    if w.get(Table::Outcomes, key)?.is_none() {
        return Ok(0);
    }
    w.remove(Table::Outcomes, key)?;
    Ok(1)
}

/// Indexes for retention the contacts a store written before retention
/// existed holds, from their last activity; returns how many. Reads one row
/// when the index already exists.
pub fn index_untracked(w: &mut dyn Write, keep: Keep) -> Result<usize, StoreError> {
    if !w.range(Table::Expiry, "", "\u{10ffff}", 1)?.is_empty() {
        return Ok(0);
    }
    let contacts = w.scan(Table::Contacts)?;
    for (contact_id, bytes) in &contacts {
        let contact: ContactState = decode("contact", bytes)?;
        let until = contact.last_active().saturating_add(keep.retention);
        expire_at(w, until, Kind::Contact, contact_id)?;
        for entry in &contact.history {
            if indexed_contact(&*w, &entry.handoff_id)?.is_some() {
                expire_at(w, until, Kind::Handoff, &entry.handoff_id)?;
            }
        }
    }
    Ok(contacts.len())
}
