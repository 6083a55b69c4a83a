//! A CSV file in, validated leads or a reason out, never a panic: the input
//! is a whole file (header row, then records) read as `cadence import` does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut records = reader.byte_records();
    let Some(Ok(header)) = records.next() else { return };
    let headers: Vec<String> = header.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
    for record in records.take(64) {
        let Ok(record) = record else { return };
        let _ = cadence::cli::parse_row(&headers, &record);
    }
});
