//! Cursor pagination shared by every list. A cursor is opaque to callers: base64url of
//! `<created_at as microseconds>|<id>` of the last item returned. Lists are newest first, ordered by
//! `(created_at DESC, id DESC)`, so the next page is everything strictly after that pair: each
//! list filters its boxed query with [`after`] and builds the page with [`paginate`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::expression::BoxableExpression;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text, Timestamp};

use crate::StorageError;
use crate::conn::DbConn;

/// Largest page a list returns, whatever the caller asks.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Which page of a list to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items to return; clamped to 1..=[`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// The previous page's `next_cursor`, or `None` for the first page.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(limit: u32, cursor: impl Into<String>) -> Self {
        Self {
            limit,
            cursor: Some(cursor.into()),
        }
    }

    /// The effective limit.
    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_PAGE_SIZE))
    }

    /// The decoded cursor, or `InvalidCursor`.
    pub(crate) fn position(&self) -> Result<Option<Cursor>, StorageError> {
        self.cursor.as_deref().map(Cursor::decode).transpose()
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(DEFAULT_PAGE_SIZE)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass it back for the next page; `None` when this is the last page.
    pub next_cursor: Option<String>,
}

/// A decoded cursor: the sort key of the last item of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) created_at: NaiveDateTime,
    pub(crate) id: String,
}

impl Cursor {
    pub(crate) fn encode(created_at: NaiveDateTime, id: &str) -> String {
        let micros = created_at.and_utc().timestamp_micros();
        URL_SAFE_NO_PAD.encode(format!("{micros}|{id}"))
    }

    pub(crate) fn decode(s: &str) -> Result<Self, StorageError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| StorageError::InvalidCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| StorageError::InvalidCursor)?;
        let (micros, id) = text.split_once('|').ok_or(StorageError::InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| StorageError::InvalidCursor)?;
        let created_at = chrono::DateTime::from_timestamp_micros(micros)
            .ok_or(StorageError::InvalidCursor)?
            .naive_utc();
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StorageError::InvalidCursor);
        }
        Ok(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says another page exists.
pub(crate) fn paginate<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> (NaiveDateTime, String),
    convert: impl Fn(R) -> Result<T, StorageError>,
) -> Result<Page<T>, StorageError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|r| {
            let (at, id) = key(r);
            Cursor::encode(at, &id)
        })
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(convert)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { items, next_cursor })
}

/// The backend of a boxed query.
type Db = <DbConn as Connection>::Backend;

/// The keyset condition of a newest-first list: `at < c.at OR (at = c.at AND id < c.id)`.
type After<At, Id> =
    dsl::Or<dsl::Lt<At, NaiveDateTime>, dsl::And<dsl::Eq<At, NaiveDateTime>, dsl::Lt<Id, String>>>;

/// The rows strictly after `cursor` in a list ordered by `(at DESC, id DESC)`, as a filter for
/// a boxed query over `QS` (a table or a join).
pub(crate) fn after<QS, At, Id>(
    at: At,
    id: Id,
    cursor: Cursor,
) -> Box<dyn BoxableExpression<QS, Db, SqlType = Bool>>
where
    At: Expression<SqlType = Timestamp> + Copy + 'static,
    Id: Expression<SqlType = Text> + 'static,
    After<At, Id>: BoxableExpression<QS, Db, SqlType = Bool>,
{
    Box::new(
        at.lt(cursor.created_at)
            .or(at.eq(cursor.created_at).and(id.lt(cursor.id))),
    )
}
