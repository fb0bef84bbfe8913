//! The in-memory aggregate: the [`UsageSink`] every metered request ends in.
//!
//! Recording must never make a request wait, so the aggregate is split into shards, one per
//! worker thread in practice (a thread takes the next shard index the first time it records),
//! each behind its own mutex. A request locks only its thread's shard, for one hash-map lookup
//! and a few additions: no other request contends for it, and the reporter holds it only to
//! swap the shard's map for an empty one ([`Aggregator::seal`]), an O(1) move. Recording
//! allocates only for a (key, provider, hour) or model not seen since the last seal.
//!
//! Memory is bounded whatever upstreams send: model names are kept only when short and
//! printable (`aurora_core::usage_model`), and past [`MAX_ROWS_PER_SHARD`] rows in a shard a
//! new model is counted under `(other)`, so a hostile upstream inventing a model per response
//! adds nothing.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aurora_core::{ANONYMOUS_USAGE_ID, MASTER_KEY_USAGE_ID, OTHER_MODEL, ProviderKind};
use aurora_proto::v1::UsageRow;

use crate::auth::Principal;
use crate::snapshot::KeyId;
use crate::usage::{Usage, UsageOutcome, UsageSink};

/// Rows one shard holds before new models are folded into `(other)`.
pub const MAX_ROWS_PER_SHARD: usize = 4096;
const HOUR_SECS: i64 = 3600;

/// The current time in Unix seconds; injected so tests can cross hour boundaries.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

/// Who the usage is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Attribution {
    Key(KeyId),
    Master,
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    who: Attribution,
    provider: ProviderKind,
    hour: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub reasoning: u64,
    pub incomplete: u64,
    pub unknown: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_creation = self.cache_creation.saturating_add(other.cache_creation);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
        self.incomplete = self.incomplete.saturating_add(other.incomplete);
        self.unknown = self.unknown.saturating_add(other.unknown);
    }

    fn of(usage: &Usage) -> Counts {
        let t = &usage.tokens;
        Counts {
            requests: 1,
            input: t.input,
            output: t.output,
            cache_read: t.cache_read_input,
            cache_creation: t.cache_creation_input,
            reasoning: t.reasoning,
            incomplete: u64::from(usage.outcome == UsageOutcome::Incomplete),
            unknown: u64::from(usage.outcome == UsageOutcome::Unknown),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Per slot, the models seen (few per key: a linear scan beats hashing the name). The
    /// slot's key ids and hours come from snapshots and the clock, never from a client, so a
    /// fast hasher is safe (SipHash cost more than the rest of a record).
    slots: HashMap<Slot, Vec<(Box<str>, Counts)>, foldhash::fast::RandomState>,
    rows: usize,
}

impl Shard {
    fn record(&mut self, slot: Slot, model: &str, counts: &Counts) {
        let models = self.slots.entry(slot).or_default();
        if let Some((_, existing)) = models.iter_mut().find(|(m, _)| &**m == model) {
            existing.add(counts);
            return;
        }
        let model = if self.rows >= MAX_ROWS_PER_SHARD { OTHER_MODEL } else { model };
        if let Some((_, existing)) = models.iter_mut().find(|(m, _)| &**m == model) {
            existing.add(counts);
            return;
        }
        models.push((model.into(), *counts));
        self.rows += 1;
    }
}

/// The sharded aggregate.
pub struct Aggregator {
    shards: Box<[Padded]>,
    clock: Clock,
}

/// A shard on cache lines of its own: each worker writes its shard (its lock word and map
/// header) on every request, and neighbours sharing a line would bounce it between cores.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(Mutex<Shard>);

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

fn thread_shard() -> usize {
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            shard.set(Some(index));
            index
        })
    })
}

impl Aggregator {
    pub fn new(clock: Clock) -> Self {
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(1, 64) * 2;
        Aggregator { shards: (0..shards).map(|_| Padded::default()).collect(), clock }
    }

    /// Takes everything recorded so far, merged into rows (in no particular order).
    pub fn seal(&self) -> Vec<UsageRow> {
        let mut merged: HashMap<(Slot, Box<str>), Counts> = HashMap::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.0.lock().unwrap_or_else(PoisonError::into_inner));
            for (slot, models) in taken.slots {
                for (model, counts) in models {
                    merged.entry((slot, model)).or_default().add(&counts);
                }
            }
        }
        merged.into_iter().map(|((slot, model), counts)| row(slot, &model, &counts)).collect()
    }
}

impl UsageSink for Aggregator {
    fn record(&self, principal: Principal, provider: ProviderKind, usage: &Usage) {
        let who = match principal {
            Principal::Key(id) => Attribution::Key(id),
            Principal::MasterKey => Attribution::Master,
            Principal::Anonymous => Attribution::Anonymous,
        };
        let now = (self.clock)();
        let slot = Slot { who, provider, hour: now - now.rem_euclid(HOUR_SECS) };
        let model = aurora_core::usage_model(usage.model.as_deref());
        let counts = Counts::of(usage);
        let shard = &self.shards[thread_shard() % self.shards.len()];
        shard.0.lock().unwrap_or_else(PoisonError::into_inner).record(slot, model, &counts);
    }
}

fn row(slot: Slot, model: &str, counts: &Counts) -> UsageRow {
    UsageRow {
        key_id: match slot.who {
            Attribution::Key(id) => id.to_string(),
            Attribution::Master => MASTER_KEY_USAGE_ID.to_owned(),
            Attribution::Anonymous => ANONYMOUS_USAGE_ID.to_owned(),
        },
        provider: slot.provider.as_str().to_owned(),
        model: model.to_owned(),
        bucket_start: slot.hour,
        requests: counts.requests,
        input_tokens: counts.input,
        output_tokens: counts.output,
        cache_read_input_tokens: counts.cache_read,
        cache_creation_input_tokens: counts.cache_creation,
        incomplete_requests: counts.incomplete,
        unknown_requests: counts.unknown,
        reasoning_tokens: counts.reasoning,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::AtomicI64;

    use super::*;
    use crate::usage::TokenCounts;

    fn usage(model: Option<&str>, input: u64, output: u64, outcome: UsageOutcome) -> Usage {
        Usage {
            model: model.map(Into::into),
            tokens: TokenCounts { input, output, cache_read_input: 1, ..TokenCounts::default() },
            outcome,
        }
    }

    fn sorted(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
        rows.sort_by(|a, b| (&a.key_id, &a.model, a.bucket_start).cmp(&(&b.key_id, &b.model, b.bucket_start)));
        rows
    }

    #[test]
    fn requests_aggregate_per_key_provider_model_and_hour_across_threads() {
        let now = Arc::new(AtomicI64::new(7200 + 3599));
        let clock_now = now.clone();
        let aggregator = Arc::new(Aggregator::new(Arc::new(move || clock_now.load(Ordering::Relaxed))));
        let key = Principal::Key(KeyId([1; 16]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let aggregator = aggregator.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        aggregator.record(
                            key,
                            ProviderKind::OpenAi,
                            &usage(Some("gpt-4o"), 10, 2, UsageOutcome::Complete),
                        );
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        aggregator.record(key, ProviderKind::OpenAi, &usage(None, 0, 0, UsageOutcome::Unknown));
        now.store(10_800, Ordering::Relaxed);
        aggregator.record(key, ProviderKind::OpenAi, &usage(Some("gpt-4o"), 5, 1, UsageOutcome::Incomplete));
        aggregator.record(
            Principal::MasterKey,
            ProviderKind::Anthropic,
            &usage(Some("claude"), 3, 3, UsageOutcome::Complete),
        );
        aggregator.record(Principal::Anonymous, ProviderKind::Vllm, &usage(Some("a\nb"), 1, 1, UsageOutcome::Complete));

        let rows = sorted(aggregator.seal());
        let id = KeyId([1; 16]).to_string();
        let summary: Vec<_> = rows
            .iter()
            .map(|r| (r.key_id.as_str(), r.model.as_str(), r.bucket_start, r.requests, r.input_tokens, r.output_tokens))
            .collect();
        assert_eq!(
            summary,
            [
                (id.as_str(), "", 7200, 1, 0, 0),
                (id.as_str(), "gpt-4o", 7200, 1000, 10_000, 2000),
                (id.as_str(), "gpt-4o", 10_800, 1, 5, 1),
                ("anonymous", "(unreadable)", 10_800, 1, 1, 1),
                ("master", "claude", 10_800, 1, 3, 3),
            ]
        );
        assert_eq!(rows[0].unknown_requests, 1);
        assert_eq!(rows[2].incomplete_requests, 1);
        assert_eq!(rows[1].cache_read_input_tokens, 1000);
        assert!(aggregator.seal().is_empty(), "sealing takes everything");
    }

    #[test]
    fn invented_models_cannot_grow_the_aggregate_without_bound() {
        let aggregator = Aggregator::new(Arc::new(|| 0));
        for i in 0..(MAX_ROWS_PER_SHARD + 500) {
            let model = format!("model-{i}");
            aggregator.record(
                Principal::Anonymous,
                ProviderKind::Zai,
                &usage(Some(&model), 1, 1, UsageOutcome::Complete),
            );
        }
        let rows = aggregator.seal();
        assert_eq!(rows.len(), MAX_ROWS_PER_SHARD + 1);
        let other = rows.iter().find(|r| r.model == OTHER_MODEL).unwrap();
        assert_eq!(other.requests, 500);
        assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), (MAX_ROWS_PER_SHARD + 500) as u64);
    }
}
