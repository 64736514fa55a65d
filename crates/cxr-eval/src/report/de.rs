//! Reading the report types back (`cxr-eval report` reads `metrics.json` and `comparison.json`).
//!
//! A derived `Option` field reads a missing key as `None`. The writer writes `null` for `None`,
//! so a missing key means the file is not this cxr-eval's: [`nullable`] makes it an error
//! instead of an `n/a` in a report.

use serde::{Deserialize, Deserializer};

/// An `Option` field whose key must be there: `null` is `None`, a missing key an error (serde
/// requires every field read through `deserialize_with`).
pub(super) fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}
