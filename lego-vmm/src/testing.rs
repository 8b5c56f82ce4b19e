//! Test support: a real mem-server in this process and a memory configuration pointing at it.

use std::time::Duration;

use crate::memory::excache::{ExCacheConfig, MemoryConfig, Policy, DEFAULT_PREFETCH, DEFAULT_VREGION_SIZE};
use crate::memory::mm::Mm;

/// A memory manager whose memory lives on its own embedded mem-server (field order: the
/// manager goes first, then the server).
pub(crate) struct TestMm {
    pub mm: Mm,
    pub server: mem_server::Handle,
}

/// An embedded mem-server of `capacity` bytes and a configuration with an ExCache of `excache`
/// bytes on it.
pub(crate) fn memory(capacity: u64, excache: u64) -> (mem_server::Handle, MemoryConfig) {
    let server = mem_server::MemServer::bind(mem_server::Config::new("127.0.0.1:0", capacity, 0))
    .expect("binding a test mem-server")
    .spawn()
    .expect("starting a test mem-server");
    let config = MemoryConfig {
        servers: vec![server.addr().to_string()],
        cluster: 0,
        vregion_size: DEFAULT_VREGION_SIZE,
        timeout: Duration::from_secs(10),
        replicas: 1,
        backup_storage: None,
        excache: ExCacheConfig { bytes: excache, ways: 64, policy: Policy::Fifo, prefetch: DEFAULT_PREFETCH, cleaner: true },
        transport: Default::default(),
    };
    (server, config)
}

/// A `size`-byte address space with a generous ExCache on a fresh embedded mem-server.
pub(crate) fn mm(size: u64) -> TestMm {
    let (server, config) = memory(size, 16 << 20);
    TestMm { mm: Mm::new(size, &config).expect("creating a test address space"), server }
}

/// KVM for a unit test that needs it; panics with the reason if `/dev/kvm` is not usable,
/// unless told to skip (`LEGO_SKIP_KVM_TESTS=1`), in which case the test says so on stderr.
pub(crate) fn kvm_or_skip() -> Option<kvm_ioctls::Kvm> {
    match kvm_ioctls::Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) if std::env::var("LEGO_SKIP_KVM_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (LEGO_SKIP_KVM_TESTS=1): /dev/kvm is not usable: {e}");
            None
        }
        Err(e) => panic!("/dev/kvm is not usable ({e}): set LEGO_SKIP_KVM_TESTS=1 to skip the tests that need it"),
    }
}
