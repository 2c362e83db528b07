//! History selection (SPEC §5), shared by every backend: one function
//! decides which stored messages a [`HistoryQuery`] returns.

use arqon_protocol::Timestamp;
use bytes::Bytes;

use crate::types::HistoryQuery;

/// One stored message as selection sees it.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) seq: u64,
    /// Message time in unix milliseconds (the envelope's precision).
    pub(crate) at_ms: i64,
    pub(crate) frame: Bytes,
}

/// Unix milliseconds of `at`, rounded down.
pub(crate) fn millis(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

/// The filters of a query, in the units items are stored in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Items must have `at_ms > since_ms`.
    since_ms: Option<i64>,
    /// Items must have `at_ms < until_ms`.
    until_ms: Option<i64>,
    /// Items must have `seq > after_seq`.
    after_seq: Option<u64>,
}

impl Window {
    pub(crate) fn of(query: &HistoryQuery) -> Self {
        // An item at whole millisecond m is after `since` iff m > floor(since),
        // and before `until` iff m < ceil(until).
        let ceil = |at: Timestamp| {
            let ms = at.timestamp_millis();
            if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
                ms
            } else {
                ms.saturating_add(1)
            }
        };
        Self {
            since_ms: query.since.map(millis),
            until_ms: query.until.map(ceil),
            after_seq: query.after_seq,
        }
    }

    pub(crate) fn contains(&self, seq: u64, at_ms: i64) -> bool {
        self.after_seq.is_none_or(|after| seq > after)
            && self.since_ms.is_none_or(|since| at_ms > since)
            && self.until_ms.is_none_or(|until| at_ms < until)
    }

    /// Scanning newest first, nothing older than `at_ms` can match any more
    /// (message times do not decrease along `seq`).
    pub(crate) fn exhausted_backwards(&self, at_ms: i64) -> bool {
        self.since_ms.is_some_and(|since| at_ms <= since)
    }

    /// Scanning oldest first, nothing newer than `at_ms` can match any more.
    pub(crate) fn exhausted_forwards(&self, at_ms: i64) -> bool {
        self.until_ms.is_some_and(|until| at_ms >= until)
    }
}

/// Applies `query` to `items`, which are sorted by ascending `seq` without
/// duplicates. Returns the frames, oldest first: the newest `limit` matches,
/// or with `after_seq` the oldest `limit` matches.
pub(crate) fn select<'a, I>(items: I, query: &HistoryQuery) -> Vec<Bytes>
where
    I: DoubleEndedIterator<Item = &'a Item>,
{
    let window = Window::of(query);
    let matching = |item: &&Item| window.contains(item.seq, item.at_ms);
    if query.after_seq.is_some() {
        items
            .filter(matching)
            .take(query.limit)
            .map(|item| item.frame.clone())
            .collect()
    } else {
        let mut newest: Vec<Bytes> = items
            .rev()
            .filter(matching)
            .take(query.limit)
            .map(|item| item.frame.clone())
            .collect();
        newest.reverse();
        newest
    }
}

/// Merges two lists sorted by `seq` into one without duplicates (`a` wins a
/// tie: both hold the same message).
pub(crate) fn merge(a: Vec<Item>, b: Vec<Item>) -> Vec<Item> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.seq < y.seq => a.next(),
            (Some(x), Some(y)) if x.seq > y.seq => b.next(),
            (Some(_), Some(_)) => {
                b.next();
                a.next()
            }
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        merged.extend(next);
    }
    merged
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;

    fn t(ms: i64) -> Timestamp {
        Utc.timestamp_millis_opt(1_700_000_000_000 + ms)
            .single()
            .expect("valid time")
    }

    /// Items 1..=n, item `seq` at t(seq * 10).
    fn items(n: u64) -> Vec<Item> {
        (1..=n)
            .map(|seq| Item {
                seq,
                at_ms: millis(t(i64::try_from(seq).expect("small") * 10)),
                frame: Bytes::from(seq.to_string()),
            })
            .collect()
    }

    fn run(items: &[Item], query: &HistoryQuery) -> Vec<String> {
        select(items.iter(), query)
            .into_iter()
            .map(|b| String::from_utf8(b.to_vec()).expect("utf8"))
            .collect()
    }

    #[test]
    fn newest_limit_oldest_first() {
        let all = items(10);
        assert_eq!(run(&all, &HistoryQuery::newest(3)), ["8", "9", "10"]);
        assert_eq!(run(&all, &HistoryQuery::newest(50)).len(), 10);
        assert!(run(&all, &HistoryQuery::newest(0)).is_empty());
        assert!(run(&[], &HistoryQuery::newest(5)).is_empty());
    }

    #[test]
    fn after_seq_gives_the_oldest_after_it() {
        let all = items(10);
        assert_eq!(run(&all, &HistoryQuery::after(4, 3)), ["5", "6", "7"]);
        assert_eq!(run(&all, &HistoryQuery::after(8, 5)), ["9", "10"]);
        assert!(run(&all, &HistoryQuery::after(10, 5)).is_empty());
        assert_eq!(run(&all, &HistoryQuery::after(0, 2)), ["1", "2"]);
    }

    #[test]
    fn since_and_until_are_exclusive() {
        let all = items(10);
        let query = HistoryQuery {
            since: Some(t(30)),
            until: Some(t(70)),
            ..HistoryQuery::newest(50)
        };
        assert_eq!(run(&all, &query), ["4", "5", "6"]);
        let query = HistoryQuery {
            since: Some(t(30)),
            until: Some(t(70)),
            ..HistoryQuery::newest(2)
        };
        assert_eq!(run(&all, &query), ["5", "6"]);
        let query = HistoryQuery {
            since: Some(t(30)),
            ..HistoryQuery::after(4, 2)
        };
        assert_eq!(run(&all, &query), ["5", "6"]);
    }

    #[test]
    fn sub_millisecond_bounds_compare_against_whole_milliseconds() {
        let all = items(3); // at 10, 20, 30 ms
        let micro = Duration::microseconds(400);
        // since 20.4 ms: 20 is not after it, 30 is.
        let query = HistoryQuery {
            since: Some(t(20) + micro),
            ..HistoryQuery::newest(10)
        };
        assert_eq!(run(&all, &query), ["3"]);
        // until 20.4 ms: 20 is before it.
        let query = HistoryQuery {
            until: Some(t(20) + micro),
            ..HistoryQuery::newest(10)
        };
        assert_eq!(run(&all, &query), ["1", "2"]);
        // until exactly 20 ms: 20 is not before it.
        let query = HistoryQuery {
            until: Some(t(20)),
            ..HistoryQuery::newest(10)
        };
        assert_eq!(run(&all, &query), ["1"]);
    }

    #[test]
    fn merge_is_sorted_and_deduplicated() {
        let all = items(6);
        let a: Vec<Item> = [1, 2, 4].iter().map(|&i| all[i - 1].clone()).collect();
        let b: Vec<Item> = [2, 3, 5, 6].iter().map(|&i| all[i - 1].clone()).collect();
        let seqs: Vec<u64> = merge(a, b).iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    }
}
