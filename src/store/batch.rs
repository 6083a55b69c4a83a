//! A batch of rows handed to one statement as a table `v`, whatever its
//! size: how a claim, a group commit or an import writes hundreds of rows
//! with one statement instead of one each.
//!
//! PostgreSQL gets the rows as one JSON parameter (`jsonb_to_recordset`),
//! which its planner handles well. On SQLite the same JSON cost more than
//! half of the writer's instructions in a dispatch tick (callgrind: parse
//! the array, print each object back to text, parse it again as JSONB,
//! look each column up by key), inside the one write turn of the process.
//! There the rows are bound as a `VALUES` list, one anonymous `?` a value.
//! The list is padded with NULL rows to a power of two, which a marker
//! column filters out, so a statement has a handful of shapes that stay
//! prepared rather than one text per batch size. Past [`MAX_VALUES`]
//! parameters (a large import batch not split with [`Rows::max_rows`])
//! SQLite falls back to the JSON form.

use serde::ser::{self, Impossible, Serialize, SerializeStruct, Serializer};

use super::{Backend, Col};

/// The most parameters one SQLite statement binds as `VALUES` (markers and
/// padding included): each shape of a statement stays prepared on each
/// connection that ran it, and holds memory in proportion.
const MAX_VALUES: usize = 8192;

/// A batch of rows, ready to bind: see the module docs.
#[derive(Clone)]
pub(crate) struct Rows<'c> {
    cols: &'c [(&'c str, Col)],
    /// Whether the rows are one column `key` of scalars (see [`Rows::keys`]).
    keys: bool,
    n: usize,
    data: Data,
}

#[derive(Clone)]
enum Data {
    PgJson(String),
    SqliteJson(String),
    /// The parameters: row after row, a marker (NULL only for padding)
    /// then each value in the order of `cols`, padded to a power of two.
    Values(Vec<Value>),
}

/// One bound value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl<'c> Rows<'c> {
    /// `rows` (structs whose fields are named as `cols`; a column no field
    /// names is NULL) as table `v` with the columns `cols`.
    pub(crate) fn new<DB: Backend, T: Serialize>(_: &sqlx::Pool<DB>, cols: &'c [(&'c str, Col)], rows: &[T]) -> Rows<'c> {
        Rows::of::<DB, T>(cols, rows)
    }

    fn of<DB: Backend, T: Serialize>(cols: &'c [(&'c str, Col)], rows: &[T]) -> Rows<'c> {
        let n = rows.len();
        let data = if !DB::BIND_VALUES {
            Data::PgJson(json(rows))
        } else if !fits(n, cols.len()) {
            Data::SqliteJson(json(rows))
        } else {
            Data::Values(values(
                n,
                cols.len(),
                rows.iter().map(|row| {
                    move |out: &mut [Value]| row.serialize(RowSerializer { cols, out }).expect("a store row is a struct of scalars")
                }),
            ))
        };
        Rows { cols, keys: false, n, data }
    }

    /// How many rows of `width` columns one statement takes as `VALUES`:
    /// split larger batches into chunks of this many, each its own
    /// statement, or they are bound as JSON.
    pub(crate) fn max_rows<DB: Backend>(_: &sqlx::Pool<DB>, width: usize) -> usize {
        if DB::BIND_VALUES {
            values_rows(width)
        } else {
            usize::MAX
        }
    }

    /// `keys` (scalars: ids, addresses) as table `v` with one column `key`.
    pub(crate) fn keys<DB: Backend, T: Serialize>(_: &sqlx::Pool<DB>, col: Col, keys: impl IntoIterator<Item = T>) -> Rows<'static> {
        let keys: Vec<T> = keys.into_iter().collect();
        let cols: &'static [(&'static str, Col)] = match col {
            Col::Int => &[("key", Col::Int)],
            Col::Float => &[("key", Col::Float)],
            Col::Text => &[("key", Col::Text)],
        };
        let n = keys.len();
        let data = if !DB::BIND_VALUES {
            Data::PgJson(json(&keys))
        } else if !fits(n, 1) {
            Data::SqliteJson(json(&keys))
        } else {
            Data::Values(values(
                n,
                1,
                keys.iter().map(|k| move |out: &mut [Value]| out[0] = k.serialize(ValueSerializer).expect("a key is a scalar")),
            ))
        };
        Rows { cols, keys: true, n, data }
    }

    /// The table expression, aliased `v`. The rows take the statement's
    /// first parameters: bind them first, with [`bind_rows!`], and name the
    /// statement's other parameters with [`Rows::param`].
    pub(crate) fn table(&self) -> String {
        match &self.data {
            Data::PgJson(_) if self.keys => <sqlx::Postgres as Backend>::json_key_rows("$1", self.cols[0].1),
            Data::PgJson(_) => <sqlx::Postgres as Backend>::json_rows("$1", self.cols),
            Data::SqliteJson(_) if self.keys => <sqlx::Sqlite as Backend>::json_key_rows("$1", self.cols[0].1),
            Data::SqliteJson(_) => <sqlx::Sqlite as Backend>::json_rows("$1", self.cols),
            // Anonymous `?`: SQLite and sqlx look each named parameter up
            // in a list of all the statement's names, which is quadratic in
            // a list of thousands (it made a dispatch tick 2.5 times slower).
            Data::Values(_) => {
                let mut sql = String::from("(SELECT ");
                for (i, (name, _)) in self.cols.iter().enumerate() {
                    sql.push_str(&format!("{}column{} AS {name}", if i > 0 { ", " } else { "" }, i + 2));
                }
                sql.push_str(" FROM (VALUES ");
                let row = format!("({})", vec!["?"; self.cols.len() + 1].join(", "));
                for r in 0..self.n.next_power_of_two() {
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&row);
                }
                sql.push_str(") WHERE column1 IS NOT NULL) AS v");
                sql
            }
        }
    }

    /// The placeholder of the statement's `k`-th parameter (from 1) other
    /// than the rows, bound after them.
    pub(crate) fn param(&self, k: usize) -> String {
        let taken = match &self.data {
            Data::PgJson(_) | Data::SqliteJson(_) => 1,
            Data::Values(params) => params.len(),
        };
        format!("${}", taken + k)
    }

    /// The parameters, in the order [`Rows::table`] numbers them.
    pub(crate) fn into_params(self) -> Vec<Value> {
        match self.data {
            Data::PgJson(json) | Data::SqliteJson(json) => vec![Value::Text(json)],
            Data::Values(params) => params,
        }
    }
}

/// Whether `n` rows of `width` are bound as values: padded, with their
/// markers, within [`MAX_VALUES`].
fn fits(n: usize, width: usize) -> bool {
    n.next_power_of_two() * (width + 1) <= MAX_VALUES
}

/// The parameters of [`Data::Values`]: for each of the `n` rows a marker,
/// then the `width` values that its `fill` writes; then NULL padding.
fn values<F: FnOnce(&mut [Value])>(n: usize, width: usize, rows: impl Iterator<Item = F>) -> Vec<Value> {
    let len = n.next_power_of_two() * (width + 1);
    let mut params = Vec::with_capacity(len);
    for fill in rows {
        params.push(Value::Int(1));
        let start = params.len();
        params.resize(start + width, Value::Null);
        fill(&mut params[start..]);
    }
    params.resize(len, Value::Null);
    params
}

/// The largest power of two of rows of `width` (and the marker) that fits
/// in [`MAX_VALUES`]: a full chunk needs no padding.
fn values_rows(width: usize) -> usize {
    let rows = (MAX_VALUES / (width + 1)).max(1);
    1 << (usize::BITS - 1 - rows.leading_zeros())
}

fn json<T: Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows serialise")
}

/// Binds the parameters of a [`Rows`] to a query (`sqlx::query`,
/// `query_as` or `query_scalar`), before any other.
macro_rules! bind_rows {
    ($query:expr, $rows:expr) => {{
        let mut q = $query;
        for v in $crate::store::batch::Rows::into_params($rows) {
            q = match v {
                $crate::store::batch::Value::Null => q.bind(None::<i64>),
                $crate::store::batch::Value::Int(i) => q.bind(i),
                $crate::store::batch::Value::Float(f) => q.bind(f),
                $crate::store::batch::Value::Text(s) => q.bind(s),
            };
        }
        q
    }};
}
pub(crate) use bind_rows;

/// Why a row could not be bound: it was not a struct of scalars.
#[derive(Debug)]
struct NotScalar(String);

impl std::fmt::Display for NotScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotScalar {}
impl ser::Error for NotScalar {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        NotScalar(msg.to_string())
    }
}

/// Serialises one struct into its row of values, by field name.
struct RowSerializer<'a, 'c> {
    cols: &'c [(&'c str, Col)],
    out: &'a mut [Value],
}

impl SerializeStruct for RowSerializer<'_, '_> {
    type Ok = ();
    type Error = NotScalar;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), NotScalar> {
        if let Some(i) = self.cols.iter().position(|(name, _)| *name == key) {
            self.out[i] = value.serialize(ValueSerializer)?;
        }
        Ok(())
    }
    fn end(self) -> Result<(), NotScalar> {
        Ok(())
    }
}

/// Everything but a struct is refused.
macro_rules! refuse {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<$ret, NotScalar> {
            Err(NotScalar(concat!("not a row: ", stringify!($name)).into()))
        })*
    };
}

impl<'a, 'c> Serializer for RowSerializer<'a, 'c> {
    type Ok = ();
    type Error = NotScalar;
    type SerializeSeq = Impossible<(), NotScalar>;
    type SerializeTuple = Impossible<(), NotScalar>;
    type SerializeTupleStruct = Impossible<(), NotScalar>;
    type SerializeTupleVariant = Impossible<(), NotScalar>;
    type SerializeMap = Impossible<(), NotScalar>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), NotScalar>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, NotScalar> {
        Ok(self)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<(), NotScalar> {
        Err(NotScalar("not a row: newtype".into()))
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<(), NotScalar> {
        Err(NotScalar("not a row: newtype variant".into()))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), NotScalar> {
        Err(NotScalar("not a row: option".into()))
    }
    refuse! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

/// Serialises one scalar (a field, or a key).
struct ValueSerializer;

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = NotScalar;
    type SerializeSeq = Impossible<Value, NotScalar>;
    type SerializeTuple = Impossible<Value, NotScalar>;
    type SerializeTupleStruct = Impossible<Value, NotScalar>;
    type SerializeTupleVariant = Impossible<Value, NotScalar>;
    type SerializeMap = Impossible<Value, NotScalar>;
    type SerializeStruct = Impossible<Value, NotScalar>;
    type SerializeStructVariant = Impossible<Value, NotScalar>;

    fn serialize_bool(self, v: bool) -> Result<Value, NotScalar> {
        Ok(Value::Int(i64::from(v)))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, NotScalar> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, NotScalar> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, NotScalar> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, NotScalar> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, NotScalar> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, NotScalar> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, NotScalar> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, NotScalar> {
        i64::try_from(v).map(Value::Int).map_err(|_| NotScalar(format!("{v} is out of range")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, NotScalar> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, NotScalar> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, NotScalar> {
        Ok(Value::Text(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, NotScalar> {
        Ok(Value::Text(v.to_string()))
    }
    fn serialize_none(self) -> Result<Value, NotScalar> {
        Ok(Value::Null)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<Value, NotScalar> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, NotScalar> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<Value, NotScalar> {
        Ok(Value::Text(variant.to_string()))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, v: &T) -> Result<Value, NotScalar> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<Value, NotScalar> {
        Err(NotScalar("not a scalar: newtype variant".into()))
    }
    refuse! {
        serialize_bytes(&[u8]) -> Value;
        serialize_unit_struct(&'static str) -> Value;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Row<'a> {
        // Not in the order of the columns, and one field that is not one.
        name: Option<&'a str>,
        id: i64,
        ignored: bool,
        score: f64,
    }

    const COLS: &[(&str, Col)] = &[("id", Col::Int), ("name", Col::Text), ("score", Col::Float), ("missing", Col::Text)];

    fn rows() -> Vec<Row<'static>> {
        vec![
            Row { name: Some("O'Brien; DROP TABLE leads"), id: 7, ignored: true, score: 1.5 },
            Row { name: None, id: i64::MAX, ignored: false, score: -0.25 },
            Row { name: Some("Zoë \u{1F4EC}"), id: -3, ignored: false, score: 0.0 },
        ]
    }

    #[test]
    fn sqlite_binds_values_padded_to_a_power_of_two() {
        let rows = Rows::of::<sqlx::Sqlite, _>(COLS, &rows());
        let sql = rows.table();
        assert_eq!(sql.matches("(?, ?, ?, ?, ?)").count(), 4, "3 rows padded to 4: {sql}");
        assert!(sql.ends_with(") WHERE column1 IS NOT NULL) AS v"), "{sql}");
        assert!(sql.starts_with("(SELECT column2 AS id, column3 AS name, column4 AS score, column5 AS missing FROM (VALUES "), "{sql}");
        // 4 rows of a marker and 4 values come first; the statement's own follow.
        assert_eq!(rows.param(1), "$21");
        let params = rows.into_params();
        assert_eq!(params.len(), 20);
        assert_eq!(
            params[..5],
            [Value::Int(1), Value::Int(7), Value::Text("O'Brien; DROP TABLE leads".into()), Value::Float(1.5), Value::Null]
        );
        assert_eq!(params[5..8], [Value::Int(1), Value::Int(i64::MAX), Value::Null]);
        assert!(params[15..].iter().all(|v| *v == Value::Null), "padding is NULL, marker included");
    }

    #[test]
    fn postgres_and_large_sqlite_batches_take_one_json_parameter() {
        let pg = Rows::of::<sqlx::Postgres, _>(COLS, &rows());
        assert!(pg.table().starts_with("jsonb_to_recordset($1::jsonb)"), "{}", pg.table());
        assert_eq!(pg.param(1), "$2");
        let many: Vec<Row> = (0..MAX_VALUES).map(|id| Row { name: None, id: id as i64, ignored: false, score: 0.0 }).collect();
        let big = Rows::of::<sqlx::Sqlite, _>(COLS, &many);
        assert!(big.table().contains("json_each($1)"), "{}", big.table());
        assert_eq!(big.param(2), "$3");
        assert_eq!(big.into_params().len(), 1);
    }

    #[test]
    fn chunks_fill_a_statement_without_padding() {
        for width in [1, 2, 4, 11, 15] {
            let n = values_rows(width);
            assert!(n.is_power_of_two() && n * (width + 1) <= MAX_VALUES && 2 * n * (width + 1) > MAX_VALUES, "width {width}: {n}");
        }
        let full: Vec<Row> = (0..values_rows(COLS.len())).map(|id| Row { name: None, id: id as i64, ignored: false, score: 0.0 }).collect();
        assert!(matches!(Rows::of::<sqlx::Sqlite, _>(COLS, &full).data, Data::Values(_)), "a full chunk is bound as values");
    }

    /// The same rows through SQLite itself, both forms: what is read back
    /// is what was bound, quotes, NULLs and extremes included.
    #[tokio::test]
    async fn values_and_json_read_back_the_same_on_sqlite() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        type Read = (i64, Option<String>, f64, Option<String>, String);
        async fn read(pool: &sqlx::SqlitePool, rows: Rows<'_>) -> Vec<Read> {
            let sql = format!("SELECT id, name, score, missing, {} FROM {} ORDER BY id", rows.param(1), rows.table());
            bind_rows!(sqlx::query_as::<_, Read>(&sql), rows).bind("fixed").fetch_all(pool).await.unwrap()
        }
        let values = read(&pool, Rows::of::<sqlx::Sqlite, _>(COLS, &rows())).await;
        let json = read(&pool, Rows { data: Data::SqliteJson(json(&rows())), ..Rows::of::<sqlx::Sqlite, _>(COLS, &rows()) }).await;
        assert_eq!(values, json);
        assert_eq!(values.len(), 3, "padding rows are cut");
        assert_eq!(values[1], (7, Some("O'Brien; DROP TABLE leads".into()), 1.5, None, "fixed".into()));
        assert_eq!(values[2], (i64::MAX, None, -0.25, None, "fixed".into()));
        assert_eq!(values[0].1.as_deref(), Some("Zoë \u{1F4EC}"));
        let keys = Rows::keys(&pool, Col::Int, [3_i64, 1, 2]);
        let sql = format!("SELECT key FROM {} ORDER BY key", keys.table());
        let got: Vec<i64> = bind_rows!(sqlx::query_scalar(&sql), keys).fetch_all(&pool).await.unwrap();
        assert_eq!(got, [1, 2, 3]);
    }
}
