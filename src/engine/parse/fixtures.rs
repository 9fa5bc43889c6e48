//! What the parse tests share: the built-in specs, the Portal's NBF
//! header, a transformer over one municipality (São Paulo), and an NBF row
//! holding a made-up person's name, NIS and CPF for the privacy checks.

use std::path::Path;

use csv::ByteRecord;

use super::{MunicipalityEntry, MunicipalityIndex, Plan, Transformer};
use crate::dataset::{Period, Spec};

pub(super) fn spec(name: &str) -> Spec {
    crate::dataset::find(Path::new("/nonexistent"), name).expect("builtin spec")
}

pub(super) fn record(fields: &[&[u8]]) -> ByteRecord {
    let mut r = ByteRecord::new();
    for f in fields {
        r.push_field(f);
    }
    r
}

pub(super) const NBF_HEADER: &[&[u8]] = &[
    b"M\xcaS COMPET\xcaNCIA",
    b"M\xcaS REFER\xcaNCIA",
    b"UF",
    b"C\xd3DIGO MUNIC\xcdPIO SIAFI",
    b"NOME MUNIC\xcdPIO",
    b"CPF FAVORECIDO",
    b"NIS FAVORECIDO",
    b"NOME FAVORECIDO",
    b"VALOR PARCELA",
];

/// The Portal's BPC header (Windows-1252 bytes).
pub(super) const BPC_HEADER: &[&[u8]] = &[
    b"M\xcaS COMPET\xcaNCIA",
    b"M\xcaS REFER\xcaNCIA",
    b"UF",
    b"C\xd3DIGO MUNIC\xcdPIO SIAFI",
    b"NOME MUNIC\xcdPIO",
    b"NIS BENEFICI\xc1RIO",
    b"CPF BENEFICI\xc1RIO",
    b"NOME BENEFICI\xc1RIO",
    b"NIS REPRESENTANTE LEGAL",
    b"CPF REPRESENTANTE LEGAL",
    b"NOME REPRESENTANTE LEGAL",
    b"N\xdaMERO BENEF\xcdCIO",
    b"BENEF\xcdCIO CONCEDIDO JUDICIALMENTE",
    b"VALOR PARCELA",
];

pub(super) fn transformer(spec: &Spec, header: &[&[u8]]) -> Transformer {
    let plan = Plan::new(spec, &record(header)).expect("header");
    let index = MunicipalityIndex::new([MunicipalityEntry {
        id: 7,
        ibge: 3550308,
        siafi: Some(7107),
        state_id: 35,
    }]);
    Transformer::new(plan, spec, index, Period::new(2024, 10), b"k")
}

/// Data-driven row checks: (fields, Ok(value cents, has NIS) | Err(code)).
pub(super) fn check(t: &mut Transformer, fields: &[&[u8]], want: Result<(i64, bool), &str>) {
    let got = t
        .row(&record(fields))
        .map(|r| (r.value_cents, r.beneficiary_hash.is_some()))
        .map_err(|e| e.reason.code());
    assert_eq!(got, want, "fields {fields:?}");
}

pub(super) const NAME: &str = "MARIA JOSÉ DA SILVA";
pub(super) const NIS: &str = "12345678901";
pub(super) const CPF: &str = "***.456.789-**";

/// An NBF data row (competência, referência, UF, SIAFI, município, CPF,
/// NIS, nome, valor) with `value` as its last field.
pub(super) fn nbf_fields(siafi: &'static str, value: &'static str) -> Vec<Vec<u8>> {
    let (name, _, _) = encoding_rs::WINDOWS_1252.encode(NAME);
    vec![
        b"202410".to_vec(),
        b"202410".to_vec(),
        b"SP".to_vec(),
        siafi.as_bytes().to_vec(),
        b"SAO PAULO".to_vec(),
        CPF.as_bytes().to_vec(),
        NIS.as_bytes().to_vec(),
        name.into_owned(),
        value.as_bytes().to_vec(),
    ]
}

pub(super) fn as_record(fields: &[Vec<u8>]) -> ByteRecord {
    let slices: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    record(&slices)
}
