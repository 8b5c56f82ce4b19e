//! rust-realworld: C libraries no one here wrote, built from the sources their crates bundle and
//! driven through their own C APIs, on files:
//!
//!     rust-realworld sqlite DB SQL...      runs each statement on the database file DB,
//!                                          printing result rows tab-separated
//!     rust-realworld zstd LEVEL IN OUT     compresses IN into OUT (Zstandard)
//!     rust-realworld unzstd IN OUT         decompresses IN into OUT
//!     rust-realworld lua SCRIPT [ARGS...]  runs a Lua 5.4 script (ARGS in `arg`)
//!
//! SQLite runs with its `unix-none` VFS (no file locking: one process uses the file).
//! Exit status 0 on success, 1 with a message on stderr otherwise.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::process::ExitCode;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

unsafe extern "C" fn print_row(
    _: *mut c_void,
    n: c_int,
    values: *mut *mut c_char,
    _: *mut *mut c_char,
) -> c_int {
    let mut cols = Vec::new();
    for i in 0..n as usize {
        let v = *values.add(i);
        cols.push(if v.is_null() {
            "NULL".to_string()
        } else {
            CStr::from_ptr(v).to_string_lossy().into_owned()
        });
    }
    println!("{}", cols.join("\t"));
    0
}

fn sqlite(db: &str, statements: &[String]) -> Result<(), String> {
    use libsqlite3_sys as ffi;
    let mut handle = std::ptr::null_mut();
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
    // SAFETY: valid NUL-terminated strings and an out pointer.
    let rc = unsafe {
        ffi::sqlite3_open_v2(cstr(db).as_ptr(), &mut handle, flags, c"unix-none".as_ptr())
    };
    if rc != ffi::SQLITE_OK {
        return Err(format!("opening {db}: error {rc}"));
    }
    let mut result = Ok(());
    for sql in statements {
        let mut err = std::ptr::null_mut();
        // SAFETY: an open handle, a NUL-terminated statement, a callback of the right type.
        let rc = unsafe {
            ffi::sqlite3_exec(
                handle,
                cstr(sql).as_ptr(),
                Some(print_row),
                std::ptr::null_mut(),
                &mut err,
            )
        };
        if rc != ffi::SQLITE_OK {
            // SAFETY: sqlite3_exec set `err` to a message it allocated (or left it NULL).
            let msg = if err.is_null() {
                format!("error {rc}")
            } else {
                unsafe { CStr::from_ptr(err) }
                    .to_string_lossy()
                    .into_owned()
            };
            // SAFETY: the message came from sqlite3_malloc.
            unsafe { ffi::sqlite3_free(err.cast()) };
            result = Err(format!("{sql}: {msg}"));
            break;
        }
    }
    // SAFETY: the handle is open and no statement is left unfinalized (sqlite3_exec finalizes).
    unsafe { ffi::sqlite3_close(handle) };
    result
}

fn zstd(level: i32, input: &str, output: &str) -> Result<(), String> {
    let data = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    // SAFETY: ZSTD_compressBound is a pure function.
    let bound = unsafe { zstd_sys::ZSTD_compressBound(data.len()) };
    let mut out = vec![0u8; bound];
    // SAFETY: both buffers are valid for the lengths passed.
    let n = unsafe {
        zstd_sys::ZSTD_compress(
            out.as_mut_ptr().cast(),
            out.len(),
            data.as_ptr().cast(),
            data.len(),
            level,
        )
    };
    // SAFETY: ZSTD_isError is a pure function.
    if unsafe { zstd_sys::ZSTD_isError(n) } != 0 {
        return Err(format!("compressing {input}: error {n}"));
    }
    out.truncate(n);
    std::fs::write(output, &out).map_err(|e| format!("{output}: {e}"))?;
    println!("{input}: {} -> {} bytes", data.len(), n);
    Ok(())
}

fn unzstd(input: &str, output: &str) -> Result<(), String> {
    let data = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    // SAFETY: the buffer is valid for its length.
    let size = unsafe { zstd_sys::ZSTD_getFrameContentSize(data.as_ptr().cast(), data.len()) };
    if size >= u64::MAX - 1 {
        return Err(format!("{input}: not a Zstandard frame with its size"));
    }
    let mut out = vec![0u8; size as usize];
    // SAFETY: both buffers are valid for the lengths passed.
    let n = unsafe {
        zstd_sys::ZSTD_decompress(
            out.as_mut_ptr().cast(),
            out.len(),
            data.as_ptr().cast(),
            data.len(),
        )
    };
    // SAFETY: ZSTD_isError is a pure function.
    if unsafe { zstd_sys::ZSTD_isError(n) } != 0 {
        return Err(format!("decompressing {input}: error {n}"));
    }
    std::fs::write(output, &out[..n]).map_err(|e| format!("{output}: {e}"))?;
    println!("{input}: {} -> {n} bytes", data.len());
    Ok(())
}

/// The parts of the Lua 5.4 C API used here.
mod lua {
    use std::ffi::{c_char, c_int, c_void};
    pub const LUA_MULTRET: c_int = -1;
    extern "C" {
        pub fn luaL_newstate() -> *mut c_void;
        pub fn luaL_openlibs(l: *mut c_void);
        pub fn luaL_loadfilex(l: *mut c_void, name: *const c_char, mode: *const c_char) -> c_int;
        pub fn lua_pcallk(
            l: *mut c_void,
            nargs: c_int,
            nres: c_int,
            errfunc: c_int,
            ctx: isize,
            k: *const c_void,
        ) -> c_int;
        pub fn lua_createtable(l: *mut c_void, narr: c_int, nrec: c_int);
        pub fn lua_pushstring(l: *mut c_void, s: *const c_char) -> *const c_char;
        pub fn lua_rawseti(l: *mut c_void, idx: c_int, n: i64);
        pub fn lua_setglobal(l: *mut c_void, name: *const c_char);
        pub fn lua_tolstring(l: *mut c_void, idx: c_int, len: *mut usize) -> *const c_char;
        pub fn lua_close(l: *mut c_void);
    }
}

fn run_lua(script: &str, args: &[String]) -> Result<(), String> {
    // SAFETY: the calls follow the Lua C API's stack discipline; every string is NUL-terminated
    // and outlives the call it is passed to (Lua copies pushed strings).
    unsafe {
        let l = lua::luaL_newstate();
        if l.is_null() {
            return Err("no memory for a Lua state".into());
        }
        lua::luaL_openlibs(l);
        lua::lua_createtable(l, args.len() as c_int, 0);
        for (i, a) in args.iter().enumerate() {
            lua::lua_pushstring(l, cstr(a).as_ptr());
            lua::lua_rawseti(l, -2, i as i64 + 1);
        }
        lua::lua_setglobal(l, c"arg".as_ptr());
        let mut rc = lua::luaL_loadfilex(l, cstr(script).as_ptr(), std::ptr::null());
        if rc == 0 {
            rc = lua::lua_pcallk(l, 0, lua::LUA_MULTRET, 0, 0, std::ptr::null());
        }
        let result = if rc == 0 {
            Ok(())
        } else {
            let msg = lua::lua_tolstring(l, -1, std::ptr::null_mut());
            Err(if msg.is_null() {
                format!("lua error {rc}")
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            })
        };
        lua::lua_close(l);
        result
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sqlite", db, ..] if args.len() > 2 => sqlite(db, &args[2..]),
        ["zstd", level, input, output] => level.parse().map_err(|e| format!("level {level}: {e}")).and_then(|l| zstd(l, input, output)),
        ["unzstd", input, output] => unzstd(input, output),
        ["lua", script, ..] => run_lua(script, &args[2..]),
        _ => Err("usage: rust-realworld sqlite DB SQL... | zstd LEVEL IN OUT | unzstd IN OUT | lua SCRIPT [ARGS...]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rust-realworld: {e}");
            ExitCode::FAILURE
        }
    }
}
