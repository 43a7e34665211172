fn main() {
    println!("aira-runtime {}", env!("CARGO_PKG_VERSION"));
}
