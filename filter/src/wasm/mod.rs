//! The proxy-wasm glue: registers the root and HTTP contexts and implements
//! [`Host`] over the ABI. Everything else lives in [`crate::filter`].

mod abi;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::filter::{FilterRoot, RequestState};
use crate::host::{AdminGet, Host, HostError, LogLevel, MetricKind};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        let seed = abi::now_nanos() ^ (u64::from(context_id) << 32);
        Box::new(Root { state: Rc::new(RefCell::new(FilterRoot::new(seed))) })
    });
}}

/// The host as seen through the ABI; `replied` records a local reply.
#[derive(Default)]
struct WasmHost {
    replied: bool,
}

impl Host for WasmHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        abi::property(path)
    }
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        abi::request_header(name)
    }
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        abi::response_header(name)
    }
    fn response_header_pairs(&self) -> Result<Option<Vec<u8>>, HostError> {
        abi::response_header_pairs()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        abi::set_request_header(name, value)
    }
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        abi::remove_response_header(name)
    }
    fn send_local_reply(&mut self, status: u32, body: &str) -> Result<(), HostError> {
        abi::send_local_reply(status, body)?;
        self.replied = true;
        Ok(())
    }
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        abi::shared_data(key)
    }
    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), HostError> {
        abi::set_shared_data(key, value, cas)
    }
    fn now_nanos(&self) -> u64 {
        abi::now_nanos()
    }
    fn set_tick_period(&mut self, period: Duration) -> Result<(), HostError> {
        abi::set_tick_period(u32::try_from(period.as_millis()).unwrap_or(u32::MAX).max(1))
    }
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        abi::define_metric(
            match kind {
                MetricKind::Counter => 0,
                MetricKind::Gauge => 1,
            },
            name,
        )
    }
    fn increment_metric(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        abi::increment_metric(id, by)
    }
    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        abi::record_metric(id, value)
    }
    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => 0,
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
        };
        abi::log(level, message);
    }
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        abi::plugin_configuration()
    }
    /// Through the SDK's hostcall: it registers the token with the SDK's
    /// dispatcher, which routes `proxy_on_http_call_response` back to this
    /// root (an unregistered token would make the SDK panic there). Its
    /// only panic is on a status Envoy's `httpCall` never returns for valid
    /// memory (it answers Ok, BadArgument or InternalFailure).
    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        request: &AdminGet,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers = vec![
            (":method", request.method()),
            (":path", request.path()),
            (":authority", "localhost"),
        ];
        proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout).map_err(
            |status| HostError::Call {
                call: "dispatch_http_call",
                status: format!("{status:?}"),
            },
        )
    }
    fn http_call_status(&self) -> Result<Option<u32>, HostError> {
        Ok(abi::http_call_header(":status")?.and_then(|s| s.parse().ok()))
    }
    fn http_call_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        abi::http_call_body(size)
    }
}

struct Root {
    state: Rc<RefCell<FilterRoot>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Ok(mut root) = self.state.try_borrow_mut() {
            root.on_http_call_response(&mut WasmHost::default(), token, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.state.try_borrow_mut() {
            Ok(mut root) => root.on_configure(&mut WasmHost::default()),
            Err(_) => false,
        }
    }

    fn on_tick(&mut self) {
        if let Ok(mut root) = self.state.try_borrow_mut() {
            root.on_tick(&mut WasmHost::default());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            root: Rc::clone(&self.state),
            state: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    root: Rc<RefCell<FilterRoot>>,
    state: Option<RequestState>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let mut host = WasmHost::default();
        if let Ok(mut root) = self.root.try_borrow_mut() {
            self.state = root.on_request_headers(&mut host);
        }
        if host.replied {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Ok(root) = self.root.try_borrow() {
            root.on_response_headers(&mut WasmHost::default(), self.state.as_mut());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let (Some(state), Ok(mut root)) = (self.state.take(), self.root.try_borrow_mut()) {
            root.on_log(&mut WasmHost::default(), &state);
        }
    }
}
