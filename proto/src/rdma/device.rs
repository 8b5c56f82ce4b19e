//! The local RDMA device, through rdma-core's libibverbs (the `ibverbs` crate).

use super::select::{LocalDevice, RdmaUnavailable, DEVICE_GLOB};

/// Finds the device named `wanted` (any, if `None`) and opens it, which checks that its port is
/// active (`ibverbs::Device::open` refuses a port that is not ACTIVE or ARMED).
pub fn probe(wanted: Option<&str>, peer: &str) -> Result<LocalDevice, RdmaUnavailable> {
    let looked = wanted.map_or_else(|| DEVICE_GLOB.to_string(), str::to_string);
    let no_device = |why: String| RdmaUnavailable::NoDevice { device: looked.clone(), why, peer: peer.to_string() };
    let list = ibverbs::devices().map_err(|e| no_device(format!("ibv_get_device_list: {e}")))?;
    let found = list.iter().find(|d| {
        let name = d.name().map(|n| n.to_string_lossy().into_owned());
        wanted.is_none() || name.as_deref() == wanted
    });
    let device = found.ok_or_else(|| no_device(format!("{} devices listed, none of that name", list.len())))?;
    let name = device.name().map_or_else(|| "(unnamed)".to_string(), |n| n.to_string_lossy().into_owned());
    match device.open() {
        Ok(_context) => Ok(LocalDevice { name }),
        Err(e) => Err(RdmaUnavailable::Unusable { device: name, why: e.to_string(), peer: peer.to_string() }),
    }
}
