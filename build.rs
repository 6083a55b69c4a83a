//! `sqlx::migrate!` embeds the migrations at compile time but does not tell
//! cargo to watch their folder, so a new migration file alone would not
//! rebuild the binary (sqlx's documented remedy).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
