//! The only `unsafe` code of vcoord: what the `virt` crate offers no safe call for. Bulk domain
//! statistics (freed with `virDomainStatsRecordListFree`, as libvirt requires; the crate's own
//! wrapper leaks them), per-domain vCPU placement (`virDomainGetVcpus`), each pCPU's time
//! counters (`virNodeGetCPUStats`), and libvirt's memory-device size-change event
//! (`virConnectDomainEventRegisterAny`, whose callbacks the crate does not wrap).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_ulonglong, c_void, CStr};
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

/// A typed parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i128),
    /// A double.
    Double(f64),
    /// A string.
    Text(String),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// Where one vCPU runs and may run.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// vCPU number.
    pub vcpu: u32,
    /// pCPU it runs on now (negative when offline).
    pub cpu: i32,
    /// Its affinity as a libvirt cpumap.
    pub cpumap: Vec<u8>,
}

/// One domain's statistics and placement, copied out of libvirt's buffers.
#[derive(Clone, Debug)]
pub struct DomainStats {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: String,
    /// Statistics as (field, value).
    pub params: Vec<(String, Value)>,
    /// vCPU placement; `Err` when libvirt refused it for this domain.
    pub placement: Result<Vec<Placement>, Error>,
}

/// Frees a statistics record list when dropped.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful virConnectGetAllDomainStats and is freed
            // exactly once, here, with the function libvirt documents for it.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

/// Calls `virConnectGetAllDomainStats(stats, flags)` and, for each domain, `virDomainGetVcpus`
/// with cpumaps of `maplen` bytes (none when `maplen` is 0). Returns owned copies; libvirt's
/// records are freed.
pub fn all_domain_stats(
    conn: &Connect,
    stats: u32,
    flags: u32,
    maplen: usize,
) -> Result<Vec<DomainStats>, Error> {
    let mut raw: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: conn holds a live connection for the duration of the call; `raw` is a valid place
    // for libvirt to store the array it allocates.
    let count = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut raw, flags) };
    if count < 0 {
        return Err(Error::last_error());
    }
    let list = RecordList(raw);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        // SAFETY: libvirt returned `count` valid record pointers in a NULL-terminated array that
        // stays alive until `list` is dropped at the end of this function.
        let record = unsafe { &**list.0.add(i) };
        out.push(DomainStats {
            name: domain_name(record.dom),
            uuid: domain_uuid(record.dom),
            params: typed_params(record.params, record.nparams),
            placement: if maplen == 0 {
                Ok(Vec::new())
            } else {
                vcpu_placement(record.dom, maplen)
            },
        });
    }
    Ok(out)
}

fn domain_name(dom: sys::virDomainPtr) -> String {
    // SAFETY: dom is a live domain of a record; the returned string is owned by the domain
    // object and valid while it lives, so it is copied at once.
    let name = unsafe { sys::virDomainGetName(dom) };
    if name.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated string owned by the domain object.
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

fn domain_uuid(dom: sys::virDomainPtr) -> String {
    let mut buf = [0 as c_char; 37]; // VIR_UUID_STRING_BUFLEN
                                     // SAFETY: dom is live; buf has the VIR_UUID_STRING_BUFLEN bytes libvirt writes into.
    let rc = unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) };
    if rc < 0 {
        return String::new();
    }
    // SAFETY: libvirt wrote a NUL-terminated string into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn typed_params(params: sys::virTypedParameterPtr, n: c_int) -> Vec<(String, Value)> {
    if params.is_null() || n <= 0 {
        return Vec::new();
    }
    // SAFETY: a record's `params` points to `nparams` initialized typed parameters that live as
    // long as the record list.
    let params = unsafe { std::slice::from_raw_parts(params, n as usize) };
    params
        .iter()
        .filter_map(|p| {
            // SAFETY: `field` is a NUL-terminated string within its fixed-size array.
            let field = unsafe { CStr::from_ptr(p.field.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: `type_` says which union member libvirt initialized; only that one is read.
            let value = unsafe {
                match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => Value::Int(p.value.i as i128),
                    sys::VIR_TYPED_PARAM_UINT => Value::Int(p.value.ui as i128),
                    sys::VIR_TYPED_PARAM_LLONG => Value::Int(p.value.l as i128),
                    sys::VIR_TYPED_PARAM_ULLONG => Value::Int(p.value.ul as i128),
                    sys::VIR_TYPED_PARAM_DOUBLE => Value::Double(p.value.d),
                    sys::VIR_TYPED_PARAM_BOOLEAN => Value::Int((p.value.b != 0) as i128),
                    sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                        Value::Text(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                    }
                    _ => return None,
                }
            };
            Some((field, value))
        })
        .collect()
}

/// How many time counters `virNodeGetCPUStats` gives for a pCPU on this connection's host (the
/// call must then be made with exactly that many).
pub fn node_cpu_stats_count(conn: &Connect) -> Result<usize, Error> {
    let mut n: c_int = 0;
    // SAFETY: conn holds a live connection for the duration of the call; with no buffer and a
    // count of 0, libvirt only writes the number of counters into `n`.
    let rc = unsafe { sys::virNodeGetCPUStats(conn.as_ptr(), 0, ptr::null_mut(), &mut n, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok(n.max(0) as usize)
}

/// The cumulative time counters of pCPU `cpu` (`virNodeGetCPUStats`), ns, by libvirt's field
/// names (`kernel`, `user`, `idle`, `iowait`, where the host's driver gives them); `count` is
/// [`node_cpu_stats_count`]'s answer.
pub fn node_cpu_stats(conn: &Connect, cpu: u32, count: usize) -> Result<Vec<(String, u64)>, Error> {
    let cpu = c_int::try_from(cpu).unwrap_or(c_int::MAX);
    let empty = sys::virNodeCPUStats {
        field: [0; sys::VIR_NODE_CPU_STATS_FIELD_LENGTH as usize],
        value: 0,
    };
    let mut params = vec![empty; count];
    let mut n = c_int::try_from(count).unwrap_or(0);
    // SAFETY: conn holds a live connection for the duration of the call; `params` has room for
    // exactly `n` entries, the count passed; libvirt writes at most that many and stores the
    // number written in `n`.
    let rc = unsafe { sys::virNodeGetCPUStats(conn.as_ptr(), cpu, params.as_mut_ptr(), &mut n, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok(params
        .iter()
        .take((n.max(0) as usize).min(count))
        .filter_map(|p| {
            // The name is NUL-terminated within its fixed-size field (copied, no pointer read).
            let bytes: Vec<u8> = p.field.iter().map(|&c| c as u8).collect();
            let name = CStr::from_bytes_until_nul(&bytes).ok()?;
            Some((name.to_string_lossy().into_owned(), p.value))
        })
        .collect())
}

/// `virDomainGetVcpus` of `dom`, with cpumaps of `maplen` bytes.
pub fn domain_vcpus(dom: &virt::domain::Domain, maplen: usize) -> Result<Vec<Placement>, Error> {
    // SAFETY: `dom` is a live Domain for the duration of this call; the raw pointer is only
    // passed to libvirt within it and not kept.
    let ptr = unsafe { dom.as_ptr() };
    vcpu_placement(ptr, maplen)
}

fn vcpu_placement(dom: sys::virDomainPtr, maplen: usize) -> Result<Vec<Placement>, Error> {
    // Room for every vCPU the domain can have (libvirt fills in those it has): sized from the
    // domain, so a large VM's vCPUs are never cut off.
    // SAFETY: dom is a live domain pointer owned by the caller for the duration of the call.
    let max = unsafe { sys::virDomainGetMaxVcpus(dom) };
    if max < 0 {
        return Err(Error::last_error());
    }
    let max_vcpus = (max as usize).max(1);
    let mut info = vec![
        sys::virVcpuInfo {
            number: 0,
            state: 0,
            cpuTime: 0,
            cpu: 0,
        };
        max_vcpus
    ];
    let mut maps = vec![0u8; max_vcpus * maplen];
    // SAFETY: dom is live; `info` has max_vcpus entries and `maps` max_vcpus x maplen bytes,
    // exactly the sizes passed.
    let n = unsafe {
        sys::virDomainGetVcpus(
            dom,
            info.as_mut_ptr(),
            max_vcpus as c_int,
            maps.as_mut_ptr(),
            maplen as c_int,
        )
    };
    if n < 0 {
        return Err(Error::last_error());
    }
    Ok(info[..n as usize]
        .iter()
        .enumerate()
        .map(|(i, v)| Placement {
            vcpu: v.number,
            cpu: v.cpu,
            cpumap: maps[i * maplen..(i + 1) * maplen].to_vec(),
        })
        .collect())
}

/// A virtio-mem device's new plugged size, as libvirt's memory-device size-change event said.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeChange {
    /// The domain's UUID.
    pub uuid: String,
    /// The device's alias.
    pub alias: String,
    /// What the guest has plugged now (KiB).
    pub size_kib: u64,
}

/// Size changes received and not yet taken, shared with libvirt's event thread.
pub type SizeChanges = Arc<Mutex<Vec<SizeChange>>>;

/// Runs libvirt's default event loop in a thread of its own, started once per process (the
/// first call); later calls say how that went. Connections opened before it deliver no events,
/// so it is started before the first connection.
pub fn start_event_loop() -> Result<(), String> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| loop {
                    if virt::event::event_run_default_impl().is_err() {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                })
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// A memory-device size-change subscription on one connection; ended when dropped, which
/// must happen before the connection is closed.
pub struct SizeChangeWatch {
    conn: sys::virConnectPtr,
    id: c_int,
}

// SAFETY: a connection pointer may be used from any thread (libvirt's connections are
// thread-safe); the watch only passes it back to libvirt to end the subscription.
unsafe impl Send for SizeChangeWatch {}

impl Drop for SizeChangeWatch {
    fn drop(&mut self) {
        // SAFETY: `conn` is the connection the callback was registered on, still open (the
        // owner drops the watch first); `id` is what registering returned. On a connection
        // already lost this fails, and libvirt frees the callback with the connection.
        unsafe { sys::virConnectDomainEventDeregisterAny(self.conn, self.id) };
    }
}

/// Subscribes to every domain's memory-device size changes on `conn`, appending each to
/// `queue` (from libvirt's event thread). Fails where libvirt has no such event (before 7.9)
/// or no event loop runs.
pub fn watch_size_changes(conn: &Connect, queue: &SizeChanges) -> Result<SizeChangeWatch, Error> {
    let opaque = Arc::into_raw(Arc::clone(queue)) as *mut c_void;
    // SAFETY: libvirt calls a callback registered for an event ID with that event's own
    // signature; the generic type is only how the API passes it (libvirt's
    // VIR_DOMAIN_EVENT_CALLBACK macro casts the same way). Both are `extern "C"` functions.
    let callback = unsafe {
        std::mem::transmute::<
            unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                *const c_char,
                c_ulonglong,
                *mut c_void,
            ),
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_size_change)
    };
    // SAFETY: `conn` is an open connection; `opaque` is a leaked `Arc` that libvirt hands back
    // to `on_size_change` and, when the callback is removed, to `free_queue`, which releases
    // it once.
    let id = unsafe {
        let conn = conn.as_ptr();
        let id = sys::virConnectDomainEventRegisterAny(
            conn,
            ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE as c_int,
            Some(callback),
            opaque,
            Some(free_queue),
        );
        if id < 0 {
            // Not registered: libvirt did not take the reference.
            drop(Arc::from_raw(opaque as *const Mutex<Vec<SizeChange>>));
            return Err(Error::last_error());
        }
        (conn, id)
    };
    Ok(SizeChangeWatch {
        conn: id.0,
        id: id.1,
    })
}

unsafe extern "C" fn on_size_change(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    size: c_ulonglong,
    opaque: *mut c_void,
) {
    if alias.is_null() || opaque.is_null() {
        return;
    }
    // SAFETY: libvirt passes a NUL-terminated alias valid for this call; copied at once.
    let alias = unsafe { CStr::from_ptr(alias) }
        .to_string_lossy()
        .into_owned();
    let change = SizeChange {
        uuid: domain_uuid(dom),
        alias,
        size_kib: size,
    };
    // SAFETY: `opaque` is the `Arc` leaked by `watch_size_changes`, alive until `free_queue`,
    // which libvirt calls only after the last callback.
    let queue = unsafe { &*(opaque as *const Mutex<Vec<SizeChange>>) };
    // A poisoned queue still holds good changes (the other side only pushes and drains).
    queue.lock().unwrap_or_else(|e| e.into_inner()).push(change);
}

unsafe extern "C" fn free_queue(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: `opaque` came from `Arc::into_raw` in `watch_size_changes`; libvirt calls
        // this once, when the callback is removed.
        drop(unsafe { Arc::from_raw(opaque as *const Mutex<Vec<SizeChange>>) });
    }
}
