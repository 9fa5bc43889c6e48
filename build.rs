//! Rebuild when a migration is added or changed: `refinery::embed_migrations!`
//! reads `migrations/` at compile time, and cargo does not track that
//! directory on its own (a new migration would otherwise be missing from
//! the binary until some source file changed).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
