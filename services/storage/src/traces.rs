//! Spans of sampled client requests on the replicas.
//!
//! The leader notes the trace context of each sampled write's log entry (by index), sends it
//! beside the entry to the followers (`RaftEnvelope.traces`), and every replica then opens spans
//! for that entry, children of the request's storage span: its log append until the group commit
//! made it durable (`storage.log.append`), and its apply into the items (`storage.apply`). One
//! client write is thereby one trace holding the leader and both followers. Unsampled writes (and
//! every write when no exporter is configured) cost one emptiness check.

use std::collections::{BTreeMap, VecDeque};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tern_proto::raft::EntryTrace;
use tern_replication::Index;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Traced entries (and open spans) one replica keeps at most; the oldest go first.
const MAX_TRACED: usize = 1024;

/// Where a span happens: the replica's partition, node, zone and role.
pub(crate) struct Place<'a> {
    pub partition: u64,
    pub node: &'a str,
    pub az: &'a str,
    pub leader: bool,
}

#[derive(Default)]
pub(crate) struct Traces {
    /// Log index → trace context of the sampled request whose write it is.
    entries: BTreeMap<Index, SpanContext>,
    /// Log append spans, open until the log is durable up to their index.
    appends: VecDeque<(Index, tracing::Span)>,
}

/// The span context of the current span, if it is sampled (an exporter is on and the trace was
/// chosen).
pub(crate) fn current_sampled() -> Option<SpanContext> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(sc)
}

impl Traces {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.appends.is_empty()
    }

    /// Entry `index` belongs to the sampled request `sc`.
    pub fn note(&mut self, index: Index, sc: SpanContext) {
        self.entries.insert(index, sc);
        while self.entries.len() > MAX_TRACED {
            self.entries.pop_first();
        }
    }

    /// The trace context of the entries in `first..=last`, for an append to a follower.
    pub fn to_wire(&self, first: Index, last: Index) -> Vec<EntryTrace> {
        if self.entries.is_empty() || first > last {
            return Vec::new();
        }
        self.entries
            .range(first..=last)
            .map(|(index, sc)| EntryTrace {
                index: *index,
                trace_id: sc.trace_id().to_bytes().to_vec(),
                span_id: sc.span_id().to_bytes().to_vec(),
                flags: u32::from(sc.trace_flags().to_u8()),
            })
            .collect()
    }

    /// Notes what a leader's append said about its entries' traces.
    pub fn receive(&mut self, traces: &[EntryTrace]) {
        for t in traces {
            let (Ok(trace_id), Ok(span_id)) = (
                <[u8; 16]>::try_from(t.trace_id.as_slice()),
                <[u8; 8]>::try_from(t.span_id.as_slice()),
            ) else {
                continue;
            };
            let sc = SpanContext::new(
                TraceId::from_bytes(trace_id),
                SpanId::from_bytes(span_id),
                TraceFlags::new(t.flags as u8),
                true,
                TraceState::default(),
            );
            if sc.is_valid() && sc.is_sampled() {
                self.note(t.index, sc);
            }
        }
    }

    /// The replica handed entries `indexes` to the group commit: a span per traced one, open
    /// until [`Traces::durable`] says the log holds it on disk.
    pub fn appending(&mut self, indexes: impl Iterator<Item = Index>, at: &Place) {
        if self.entries.is_empty() {
            return;
        }
        for index in indexes {
            if let Some(sc) = self.entries.get(&index) {
                let span = entry_span("storage.log.append", index, at, sc);
                self.appends.push_back((index, span));
                if self.appends.len() > MAX_TRACED {
                    self.appends.pop_front();
                }
            }
        }
    }

    /// The log is durable up to `index`: the append spans up to there end.
    pub fn durable(&mut self, index: Index) {
        while self.appends.front().is_some_and(|(i, _)| *i <= index) {
            self.appends.pop_front();
        }
    }

    /// Entries `indexes` go to the apply thread: a span per traced one, ended when the thread is
    /// done with them. Their trace context is no longer needed here.
    pub fn applying(
        &mut self,
        indexes: impl Iterator<Item = Index>,
        at: &Place,
    ) -> Vec<tracing::Span> {
        let mut spans = Vec::new();
        if self.entries.is_empty() {
            return spans;
        }
        let mut last = 0;
        for index in indexes {
            last = index;
            if let Some(sc) = self.entries.get(&index) {
                spans.push(entry_span("storage.apply", index, at, sc));
            }
        }
        // Applied entries are sent to no follower again but one far behind, whose spans may
        // go without: the context is dropped.
        self.entries = self.entries.split_off(&(last + 1));
        spans
    }
}

fn role(leader: bool) -> &'static str {
    if leader {
        "leader"
    } else {
        "follower"
    }
}

/// A span of what replica `at` does with entry `index`, child of the request's span `sc`; named
/// `name` in OpenTelemetry.
fn entry_span(name: &'static str, index: Index, at: &Place, sc: &SpanContext) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "storage.entry",
        otel.name = name,
        otel.kind = "internal",
        db.system.name = "tern",
        tern.partition = at.partition,
        tern.node = at.node,
        tern.az = at.az,
        tern.replica.role = role(at.leader),
        tern.log.index = index,
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
    let _ = span.set_parent(cx);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(n: u8) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes([n; 16]),
            SpanId::from_bytes([n; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    #[test]
    fn trace_context_crosses_to_a_follower_and_is_bounded() {
        let mut leader = Traces::default();
        leader.note(5, sc(1));
        leader.note(7, sc(2));
        let wire = leader.to_wire(6, 9);
        assert_eq!(wire.len(), 1);
        assert_eq!(wire[0].index, 7);
        let mut follower = Traces::default();
        follower.receive(&wire);
        assert_eq!(follower.to_wire(1, 10), wire);
        // Garbage from the wire is ignored.
        follower.receive(&[EntryTrace {
            index: 8,
            trace_id: vec![1, 2],
            span_id: vec![],
            flags: 1,
        }]);
        assert_eq!(follower.to_wire(1, 10).len(), 1);
        for i in 0..(MAX_TRACED as u64 + 10) {
            leader.note(100 + i, sc(3));
        }
        assert_eq!(leader.to_wire(0, u64::MAX).len(), MAX_TRACED);
        let at = Place {
            partition: 1,
            node: "n",
            az: "a",
            leader: true,
        };
        let _ = leader.applying(0..=100 + MAX_TRACED as u64 + 9, &at);
        assert!(leader.is_empty());
    }
}
