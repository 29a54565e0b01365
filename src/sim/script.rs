//! One simulated person's journey as a timeline of draft events: anonymous
//! browsing, sign-up linking the device to a user id, one-off steps, sessions
//! with carts, orders and refunds, marketing touches and consent, a second
//! device linked at login, long pauses and comebacks on another channel under
//! another id (phone, WeChat) that is linked later or never, and a few
//! scripted edge cases at the exact boundaries of timers and windows.
//!
//! A person never shares an id with another, and uses at most one id of each
//! type besides devices, so no event links two user ids.

use super::vocab::{Vocab, DAY};
use rand::rngs::SmallRng;
use rand::Rng;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// An event before it gets its id and place in the stream.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub ts: i64,
    pub person: u32,
    pub seq: u32,
    pub ids: Vec<(String, String)>,
    pub channel: String,
    pub kind: String,
    pub value: Option<f64>,
    pub campaign: Option<&'static str>,
    pub attrs: Option<serde_json::Value>,
}

/// Event times that are pushed later, out of `(lo, hi]`, so that no timer
/// falls due near the end of the input (see `generate`).
pub(crate) struct Avoid(pub Vec<(i64, i64)>);

impl Avoid {
    fn nudge(&self, mut ts: i64) -> i64 {
        for &(lo, hi) in &self.0 {
            if ts > lo && ts <= hi {
                ts = hi + 1;
            }
        }
        ts
    }
}

/// How a person behaves, drawn once.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Persona {
    /// Browses anonymously and leaves, maybe with a cart.
    Bouncer,
    /// Signs up and lives a normal, skewed life.
    Member,
    /// Comes back exactly around an inactivity timer's due time.
    EdgeDormancy,
    /// Places the `count`-th event exactly at the window's edge, then 1 ms later.
    EdgeWindow,
}

/// What every person of one simulation shares.
pub(crate) struct World<'a> {
    pub vocab: &'a Vocab,
    pub avoid: &'a Avoid,
    pub seed: u64,
    /// No event is later than this.
    pub end: i64,
}

pub(crate) struct Person<'a> {
    v: &'a Vocab,
    rng: &'a mut SmallRng,
    avoid: &'a Avoid,
    out: &'a mut Vec<Draft>,
    n: u32,
    seed: u64,
    t: i64,
    end: i64,
    seq: u32,
    devices: Vec<String>,
    device: usize,
    phone_linked: bool,
    wechat_linked: bool,
    email_linked: bool,
}

impl<'a> Person<'a> {
    /// Person `n`, whose history starts at `start`.
    pub fn new(world: &World<'a>, rng: &'a mut SmallRng, out: &'a mut Vec<Draft>, n: u32, start: i64) -> Person<'a> {
        Person {
            v: world.vocab,
            rng,
            avoid: world.avoid,
            out,
            n,
            seed: world.seed,
            t: start,
            end: world.end,
            seq: 0,
            devices: Vec::new(),
            device: 0,
            phone_linked: false,
            wechat_linked: false,
            email_linked: false,
        }
    }

    /// Writes the person's whole journey.
    pub fn live(mut self) {
        let persona = match self.rng.random::<f64>() {
            x if x < 0.27 => Persona::Bouncer,
            x if x < 0.29 && !self.v.durations.is_empty() => Persona::EdgeDormancy,
            x if x < 0.31 && self.v.counted.is_some() => Persona::EdgeWindow,
            _ => Persona::Member,
        };
        let sessions = 1 + (self.rng.random::<f64>().ln() / 0.5f64.ln()).floor().min(4.0) as usize;
        for s in 0..sessions {
            if s > 0 {
                let gap = self.exp(3 * DAY);
                self.wait(gap);
            }
            self.browse();
        }
        if persona == Persona::Bouncer {
            if self.rng.random_bool(0.3) {
                let (ids, ch) = (self.anon_ids(), self.web());
                self.emit(ids, &ch, "cart_add", None);
            }
            return;
        }
        self.sign_up();
        match persona {
            Persona::EdgeDormancy => self.edge_dormancy(),
            Persona::EdgeWindow => self.edge_window(),
            _ => self.member(),
        }
    }

    fn member(&mut self) {
        for k in self.v.ladder.clone() {
            if !self.rng.random_bool(0.8) {
                break;
            }
            let gap = self.rng.random_range(MINUTE..3 * DAY);
            self.wait(gap);
            let mut ids = self.user_ids();
            // Completing a profile step links a phone or e-mail address.
            if let Some(p) = self.v.phone.clone().filter(|_| self.rng.random_bool(0.4)) {
                ids.push((p, self.phone()));
                self.phone_linked = true;
            } else if let Some(e) = self.v.email_id.clone().filter(|_| self.rng.random_bool(0.2)) {
                ids.push((e, self.email()));
                self.email_linked = true;
            }
            let ch = self.channel_for(&k);
            self.emit(ids, &ch, &k, None);
        }
        if self.rng.random_bool(0.1) {
            self.consent();
        }
        // Skewed activity: P(at least k orders) ≈ (k + 1)^-1.1, a few customers with dozens.
        let u: f64 = self.rng.random();
        let orders = ((1.0 - u).powf(-1.0 / 1.1).floor() as usize).saturating_sub(1).min(80);
        let heavy = orders >= 10;
        let mean_gap = if heavy { 9 * DAY } else { 40 * DAY };
        let longest = self.v.durations.iter().copied().max().unwrap_or(90 * DAY);
        for _ in 0..orders {
            let pause = self.rng.random_bool(if heavy { 0.05 } else { 0.15 });
            let gap = if pause { longest + self.v.lateness + self.rng.random_range(HOUR..150 * DAY) } else { self.exp(mean_gap) };
            self.wait(gap);
            if !self.alive() {
                return;
            }
            if pause && self.rng.random_bool(0.6) {
                self.comeback();
            } else {
                self.session();
            }
            if self.rng.random_bool(0.05) {
                self.second_device();
            }
            if self.rng.random_bool(0.02) {
                self.consent();
            }
        }
        if self.rng.random_bool(0.3) {
            let gap = self.exp(20 * DAY);
            self.wait(gap);
            self.noise();
            if self.rng.random_bool(0.4) {
                let (ids, ch) = (self.user_ids(), self.web());
                self.emit(ids, &ch, "cart_add", None);
            }
        }
    }

    /// An order, then a return exactly around `last + D (+ lateness)`.
    fn edge_dormancy(&mut self) {
        let d = self.v.durations[self.rng.random_range(0..self.v.durations.len())];
        let k = self.transaction_kind();
        let (ids, ch) = (self.user_ids(), self.channel_for(&k));
        let value = self.value();
        self.emit(ids, &ch, &k, value);
        let base = if self.rng.random_bool(0.5) { d + self.v.lateness } else { d };
        let gap = base + self.rng.random_range(-1..=1);
        self.wait(gap);
        let (ids, ch) = (self.user_ids(), self.channel_for(&k));
        let value = self.value();
        self.emit(ids, &ch, &k, value);
    }

    /// A matching event at `t0`, `count - 2` more in the hours before
    /// `t0 + within`, the `count`-th exactly at `t0 + within` (the first has
    /// just left its window) and, for half of them, one more 1 ms later;
    /// views in between keep the customer from going dormant.
    fn edge_window(&mut self) {
        let Some((kind, count, within)) = self.v.counted.clone() else { return };
        let shortest = self.v.durations.iter().copied().min().unwrap_or(40 * DAY);
        let keep_alive = (shortest / 2).clamp(HOUR, 20 * DAY);
        let t0 = self.t + HOUR;
        let last = if self.rng.random_bool(0.5) { count } else { count - 1 };
        for i in 0..=last {
            let ts = match i {
                0 => t0,
                i if i + 1 < count => t0 + within - (count - 1 - i) as i64 * HOUR,
                i if i + 1 == count => t0 + within,
                _ => t0 + within + 1,
            };
            while i > 0 && self.t + keep_alive < ts - 3 * (count as i64) * HOUR {
                self.wait(keep_alive);
                let (ids, ch) = (self.user_ids(), self.web());
                self.emit(ids, &ch, "view", None);
            }
            self.t = self.avoid.nudge(ts.max(self.t));
            let (ids, ch) = (self.user_ids(), self.channel_for(&kind));
            let value = self.value();
            self.emit(ids, &ch, &kind, value);
        }
    }

    fn sign_up(&mut self) {
        let gap = self.rng.random_range(10_000..2 * HOUR);
        self.wait(gap);
        let mut ids = self.user_ids();
        if let Some(a) = self.v.anon.clone() {
            ids.push((a, self.current_device()));
        }
        let ch = self.web();
        let signup = self.v.signup.clone();
        self.emit(ids, &ch, &signup, None);
        if self.rng.random_bool(0.03) {
            // Same millisecond: a view the app sends with the sign-up.
            let ids = self.user_ids();
            self.emit(ids, &ch, "view", None);
        }
    }

    /// A session of an active customer: touches, maybe a cart, an order, maybe a refund.
    fn session(&mut self) {
        for _ in 0..self.rng.random_range(0..4) {
            self.noise();
            let gap = self.rng.random_range(5_000..20 * MINUTE);
            self.wait(gap);
        }
        let k = self.transaction_kind();
        let ch = self.channel_for(&k);
        let ids = self.ids_on(&ch);
        if self.rng.random_bool(0.5) {
            self.emit(ids.clone(), &ch, "cart_add", None);
            if self.rng.random_bool(0.25) {
                return; // abandoned cart
            }
            let gap = self.rng.random_range(MINUTE..50 * MINUTE);
            self.wait(gap);
        }
        let value = self.value();
        self.emit(ids.clone(), &ch, &k, value);
        if self.rng.random_bool(0.05) {
            let gap = self.rng.random_range(HOUR..14 * DAY);
            self.wait(gap);
            self.emit(ids, &ch, "refund", value);
        }
    }

    /// Back after a long pause, on another channel under another id; that id
    /// is linked to the user id on a later event (a merge), or never.
    fn comeback(&mut self) {
        let ch = self.v.comeback[self.rng.random_range(0..self.v.comeback.len())].clone();
        let wechatish = ch.contains("wechat") || ch.contains("mini");
        let (ty, value, linked) = match (&self.v.wechat, &self.v.phone, &self.v.email_id) {
            (Some(w), _, _) if wechatish => (w.clone(), self.wechat(), self.wechat_linked),
            (_, Some(p), _) => (p.clone(), self.phone(), self.phone_linked),
            (_, _, Some(e)) => (e.clone(), self.email(), self.email_linked),
            _ => return self.session(),
        };
        let k = self.transaction_kind();
        if linked {
            let amount = self.value();
            self.emit(vec![(ty, value)], &ch, &k, amount);
            return;
        }
        let first = if self.v.engagement.is_empty() || self.rng.random_bool(0.5) { "view".to_string() } else { self.pick(&self.v.engagement) };
        self.emit(vec![(ty.clone(), value.clone())], &ch, &first, None);
        if self.rng.random_bool(0.75) {
            let gap = self.rng.random_range(MINUTE..2 * HOUR);
            self.wait(gap);
            let mut ids = self.user_ids();
            ids.push((ty.clone(), value));
            let amount = self.value();
            let campaign = Some("win_back");
            self.emit_full(ids, &ch, &k, amount, campaign, None);
            match ty {
                t if Some(&t) == self.v.wechat.as_ref() => self.wechat_linked = true,
                t if Some(&t) == self.v.phone.as_ref() => self.phone_linked = true,
                _ => self.email_linked = true,
            }
        }
    }

    /// A new device browses anonymously, then logs in (linking it).
    fn second_device(&mut self) {
        let Some(a) = self.v.anon.clone() else { return };
        if self.devices.len() >= self.v.devices {
            return;
        }
        self.device = self.devices.len();
        let device = self.current_device();
        let ch = self.web();
        for _ in 0..self.rng.random_range(1..4) {
            self.emit(vec![(a.clone(), device.clone())], &ch, "view", None);
            let gap = self.rng.random_range(5_000..10 * MINUTE);
            self.wait(gap);
        }
        let mut ids = self.user_ids();
        ids.push((a, device));
        self.emit(ids, &ch, "login", None);
    }

    fn consent(&mut self) {
        let ch = self.v.sms.clone().unwrap_or_else(|| self.web());
        let scope = if self.v.sms.is_some() && self.rng.random_bool(0.6) { ch.clone() } else { "*".to_string() };
        let granted = self.rng.random_bool(0.15);
        let attrs = serde_json::json!({ "purpose": "marketing", "channel": scope, "granted": granted });
        let ids = self.ids_on(&ch);
        self.emit_full(ids, &ch, "consent", None, None, Some(attrs));
    }

    /// One touch that moves no journey by itself (unless a rule names it).
    fn noise(&mut self) {
        let roll = self.rng.random_range(0..10);
        let (kind, ch, campaign): (String, String, Option<&'static str>) = match roll {
            0 if self.v.email.is_some() => ("email_open".into(), self.v.email.clone().unwrap_or_default(), Some("newsletter")),
            1 if self.v.sms.is_some() => ("sms_click".into(), self.v.sms.clone().unwrap_or_default(), Some("spring")),
            2 if self.v.push.is_some() => ("push_open".into(), self.v.push.clone().unwrap_or_default(), Some("flash_sale")),
            3 => ("search".into(), self.web(), None),
            4 => ("wishlist".into(), self.web(), None),
            5 | 6 if !self.v.engagement.is_empty() => {
                let k = self.pick(&self.v.engagement);
                let ch = self.channel_for(&k);
                (k, ch, None)
            }
            _ => ("view".into(), self.web(), None),
        };
        let ids = self.ids_on(&ch);
        self.emit_full(ids, &ch, &kind, None, campaign, None);
    }

    fn browse(&mut self) {
        let Some(a) = self.v.anon.clone() else { return };
        let device = self.current_device();
        let ch = self.web();
        for _ in 0..self.rng.random_range(1..6) {
            self.emit(vec![(a.clone(), device.clone())], &ch, "view", None);
            let gap = self.rng.random_range(3_000..5 * MINUTE);
            self.wait(gap);
        }
    }

    fn emit(&mut self, ids: Vec<(String, String)>, channel: &str, kind: &str, value: Option<f64>) {
        self.emit_full(ids, channel, kind, value, None, None);
    }

    fn emit_full(
        &mut self,
        ids: Vec<(String, String)>,
        channel: &str,
        kind: &str,
        value: Option<f64>,
        campaign: Option<&'static str>,
        attrs: Option<serde_json::Value>,
    ) {
        if !self.alive() {
            return;
        }
        self.out.push(Draft { ts: self.t, person: self.n, seq: self.seq, ids, channel: channel.into(), kind: kind.into(), value, campaign, attrs });
        self.seq += 1;
    }

    fn wait(&mut self, ms: i64) {
        self.t = self.avoid.nudge(self.t + ms.max(0));
    }

    fn alive(&self) -> bool {
        self.t <= self.end
    }

    fn exp(&mut self, mean: i64) -> i64 {
        let u: f64 = self.rng.random();
        (-(1.0 - u).ln() * mean as f64) as i64
    }

    fn pick(&mut self, from: &[String]) -> String {
        from[self.rng.random_range(0..from.len())].clone()
    }

    fn web(&mut self) -> String {
        let web = &self.v.web;
        web[self.rng.random_range(0..web.len())].clone()
    }

    fn transaction_kind(&mut self) -> String {
        let t = &self.v.transactions;
        t[self.rng.random_range(0..t.len())].clone()
    }

    /// A channel for `kind`: often one a rule requires for it, else a digital one.
    fn channel_for(&mut self, kind: &str) -> String {
        match self.v.hints.get(kind) {
            Some(hint) if !hint.is_empty() && self.rng.random_bool(0.5) => {
                let known: Vec<String> = hint.iter().filter(|c| self.v.all.contains(c)).cloned().collect();
                if known.is_empty() {
                    self.web()
                } else {
                    self.pick(&known)
                }
            }
            _ if self.rng.random_bool(0.15) => {
                let c = &self.v.comeback;
                c[self.rng.random_range(0..c.len())].clone()
            }
            _ => self.web(),
        }
    }

    /// The ids an event on `channel` carries: an id the channel knows when it
    /// is linked, the user id otherwise (sometimes with the current device).
    fn ids_on(&mut self, channel: &str) -> Vec<(String, String)> {
        let wechatish = channel.contains("wechat") || channel.contains("mini");
        if let (true, true, Some(w)) = (wechatish, self.wechat_linked, self.v.wechat.clone()) {
            return vec![(w, self.wechat())];
        }
        let lowish = self.v.low.iter().any(|c| c == channel) || self.v.comeback.iter().any(|c| c == channel);
        if lowish && self.rng.random_bool(0.5) {
            if let (true, Some(p)) = (self.phone_linked, self.v.phone.clone()) {
                return vec![(p, self.phone())];
            }
            if let (true, Some(e)) = (self.email_linked, self.v.email_id.clone()) {
                return vec![(e, self.email())];
            }
        }
        let mut ids = self.user_ids();
        if let (false, true, Some(a)) = (lowish, self.rng.random_bool(0.3), self.v.anon.clone()) {
            ids.push((a, self.current_device()));
        }
        ids
    }

    fn anon_ids(&mut self) -> Vec<(String, String)> {
        match self.v.anon.clone() {
            Some(a) => vec![(a, self.current_device())],
            None => self.user_ids(),
        }
    }

    fn user_ids(&self) -> Vec<(String, String)> {
        vec![(self.v.user.clone(), format!("u{}-{}", self.seed, self.n))]
    }

    fn current_device(&mut self) -> String {
        while self.devices.len() <= self.device {
            self.devices.push(format!("dev{}-{}-{}", self.seed, self.n, self.devices.len()));
        }
        self.devices[self.device].clone()
    }

    fn phone(&self) -> String {
        format!("+86{:03}{:08}", 130 + self.seed % 70, self.n)
    }

    fn wechat(&self) -> String {
        format!("wx{}-{}", self.seed, self.n)
    }

    fn email(&self) -> String {
        format!("p{}-{}@example.com", self.seed, self.n)
    }

    /// An order value: usually log-normal around the scale, sometimes right at,
    /// just under or well over a rule's `min_value`, now and then missing.
    fn value(&mut self) -> Option<f64> {
        if self.rng.random_bool(0.03) {
            return None;
        }
        let v = if !self.v.thresholds.is_empty() && self.rng.random_bool(0.12) {
            let t = self.v.thresholds[self.rng.random_range(0..self.v.thresholds.len())];
            match self.rng.random_range(0..3) {
                0 => t,
                1 => (t - 0.01).max(0.0),
                _ => t * self.rng.random_range(1.0..3.0),
            }
        } else {
            // Box–Muller.
            let (u1, u2): (f64, f64) = (self.rng.random_range(f64::EPSILON..1.0), self.rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            self.v.value_scale * (0.9 * z).exp()
        };
        Some((v * 100.0).round() / 100.0)
    }
}
