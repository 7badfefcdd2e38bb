//! The proxy-wasm ABI (v0.2.1) calls the filter makes, declared here so that
//! every status the host returns becomes a `Result`. The SDK's `hostcalls`
//! panic on statuses they do not expect (e.g. `get_property` answering
//! `BadArgument`), and a panic kills the worker's VM.
//!
//! Buffers the host returns were allocated through the SDK's exported
//! `proxy_on_memory_allocate` (a `Vec<u8>` of exactly that size), so they are
//! taken back with `Vec::from_raw_parts`, as the SDK itself does.
#![allow(clashing_extern_declarations)]

use std::ptr::{null, null_mut};

use crate::host::HostError;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

/// `proxy_wasm::types::MapType::HttpRequestHeaders`.
const REQUEST_HEADERS: u32 = 0;
/// `proxy_wasm::types::MapType::HttpResponseHeaders`.
const RESPONSE_HEADERS: u32 = 2;
/// `proxy_wasm::types::BufferType::PluginConfiguration`.
const PLUGIN_CONFIGURATION: u32 = 7;
/// `proxy_wasm::types::MapType::HttpCallResponseHeaders`.
const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
/// `proxy_wasm::types::BufferType::HttpCallResponseBody`.
const HTTP_CALL_RESPONSE_BODY: u32 = 4;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

fn fail(call: &'static str, status: u32) -> HostError {
    HostError::Call {
        call,
        status: format!("status {status}"),
    }
}

fn check(call: &'static str, status: u32) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else {
        Err(fail(call, status))
    }
}

/// Takes ownership of a buffer the host filled in.
///
/// # Safety
/// `data`/`size` must come from a successful host call that allocated them
/// with `proxy_on_memory_allocate`.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length of a live &str.
    unsafe {
        proxy_log(level, message.as_ptr(), message.len());
    }
}

pub fn now_nanos() -> u64 {
    let mut t = 0u64;
    // SAFETY: t is a valid out pointer.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t
    } else {
        0
    }
}

pub fn set_tick_period(ms: u32) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check("set_tick_period", unsafe {
        proxy_set_tick_period_milliseconds(ms)
    })
}

pub fn plugin_configuration() -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out pointers are valid; the buffer is taken back below.
    let status = unsafe {
        proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, usize::MAX, &mut data, &mut size)
    };
    match status {
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(None),
        s => Err(fail("get_buffer(plugin_configuration)", s)),
    }
}

thread_local! {
    /// The serialized property path, reused so a property read allocates
    /// nothing besides the host's answer.
    static PATH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    PATH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => property_with(path, &mut buf),
        Err(_) => property_with(path, &mut Vec::new()),
    })
}

fn property_with(path: &[&str], serialized: &mut Vec<u8>) -> Result<Option<Vec<u8>>, HostError> {
    serialized.clear();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            serialized.push(0);
        }
        serialized.extend_from_slice(segment.as_bytes());
    }
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: path bytes live for the call; out pointers are valid.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    match status {
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(None),
        s => Err(fail("get_property", s)),
    }
}

pub fn request_header(name: &str) -> Result<Option<String>, HostError> {
    Ok(header(REQUEST_HEADERS, name)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

pub fn response_header(name: &str) -> Result<Option<Vec<u8>>, HostError> {
    header(RESPONSE_HEADERS, name)
}

/// Every response header in one buffer, in proxy-wasm's pairs encoding
/// (see [`crate::host::decode::header_pairs`]).
pub fn response_header_pairs() -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out pointers are valid; the buffer is taken back below.
    let status = unsafe { proxy_get_header_map_pairs(RESPONSE_HEADERS, &mut data, &mut size) };
    match status {
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(None),
        s => Err(fail("get_header_map_pairs", s)),
    }
}

/// Inside `on_http_call_response`: one header of the answer.
pub fn http_call_header(name: &str) -> Result<Option<String>, HostError> {
    Ok(header(HTTP_CALL_RESPONSE_HEADERS, name)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Inside `on_http_call_response`: the first `size` bytes of the body.
pub fn http_call_body(size: usize) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size_out) = (null_mut(), 0usize);
    // SAFETY: out pointers are valid; the buffer is taken back below.
    let status = unsafe {
        proxy_get_buffer_bytes(HTTP_CALL_RESPONSE_BODY, 0, size, &mut data, &mut size_out)
    };
    match status {
        OK => Ok(unsafe { take(data, size_out) }),
        NOT_FOUND => Ok(None),
        s => Err(fail("get_buffer(http_call_response_body)", s)),
    }
}

fn header(map: u32, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: key bytes live for the call; out pointers are valid.
    let status =
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) };
    match status {
        OK => Ok(unsafe { take(data, size) }),
        NOT_FOUND => Ok(None),
        s => Err(fail("get_header_map_value", s)),
    }
}

/// Removes a response header (every value); returns no buffer.
pub fn remove_response_header(name: &str) -> Result<(), HostError> {
    // SAFETY: key bytes live for the call.
    let status =
        unsafe { proxy_remove_header_map_value(RESPONSE_HEADERS, name.as_ptr(), name.len()) };
    check("remove_header_map_value", status)
}

pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    // SAFETY: key/value bytes live for the call.
    let status = unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                REQUEST_HEADERS,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(REQUEST_HEADERS, name.as_ptr(), name.len()),
        }
    };
    check("set_header_map_value", status)
}

pub fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: key bytes live for the call; out pointers are valid.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => Ok((unsafe { take(data, size) }, (cas != 0).then_some(cas))),
        NOT_FOUND => Ok((None, None)),
        s => Err(fail("get_shared_data", s)),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
    // SAFETY: key/value bytes live for the call.
    let status = unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    };
    match status {
        OK => Ok(()),
        CAS_MISMATCH => Err(HostError::CasMismatch),
        s => Err(fail("set_shared_data", s)),
    }
}

pub fn send_local_reply(status_code: u32, body: &str) -> Result<(), HostError> {
    // An empty header map: a 4-byte zero count.
    let headers = 0u32.to_le_bytes();
    let details = "locality_failover";
    // SAFETY: every pointer/length pair refers to live memory for the call.
    let status = unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    check("send_local_response", status)
}

pub fn define_metric(kind: u32, name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    // SAFETY: name bytes live for the call; id is a valid out pointer.
    check("define_metric", unsafe {
        proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check("increment_metric", unsafe {
        proxy_increment_metric(id, by)
    })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: plain value call.
    check("record_metric", unsafe { proxy_record_metric(id, value) })
}
