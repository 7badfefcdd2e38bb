//! The fuzz input as a stream of choices.
//!
//! Every draw consumes bytes from the front; an exhausted input reads as
//! zeros, so any byte string decodes to some run (libFuzzer mutates bytes,
//! the drivers see structure). Kept free of dependencies on purpose: the
//! filter's regression test includes this file with `#[path]` and replays
//! saved inputs through exactly the same decoding.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn le(&mut self, n: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.u8()) << (8 * i);
        }
        v
    }

    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }

    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }

    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// `num` times in `den` (one byte).
    pub fn ratio(&mut self, num: u8, den: u8) -> bool {
        den == 0 || self.u8() % den < num
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0), one byte when `n <= 256`.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let v = if n <= 256 {
            u64::from(self.u8())
        } else if n <= 65_536 {
            u64::from(self.u16())
        } else {
            self.u64()
        };
        (v % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        let i = self.below(items.len());
        items[i]
    }

    /// Up to `max` raw bytes (length first, one or two bytes).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = self.below(max + 1).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// Up to `max` bytes as text (invalid UTF-8 replaced).
    pub fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Builds inputs that decode to chosen values (seed corpus generation).
#[derive(Default)]
pub struct Encoder {
    pub out: Vec<u8>,
}

impl Encoder {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// The choice `i` of `below(n)`.
    pub fn below(&mut self, i: usize, n: usize) -> &mut Self {
        assert!(i < n.max(1));
        if n <= 256 {
            self.u8(i as u8)
        } else if n <= 65_536 {
            self.u16(i as u16)
        } else {
            self.u64(i as u64)
        }
    }
    /// `bytes(max)` returning exactly `b`.
    pub fn bytes(&mut self, b: &[u8], max: usize) -> &mut Self {
        assert!(b.len() <= max);
        self.below(b.len(), max + 1);
        self.out.extend_from_slice(b);
        self
    }
}
