//! Builds Lua 5.4 from the sources lua-src bundles and links it statically.
fn main() {
    let artifacts = lua_src::Build::new().build(lua_src::Lua54);
    artifacts.print_cargo_metadata();
}
