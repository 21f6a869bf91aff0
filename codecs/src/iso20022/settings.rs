//! The settings of an [`Iso20022Codec`](super::Iso20022Codec) as a config
//! file states them: the `iso20022 = { ... }` table of an ISO 20022 bank,
//! in the switch's `[[banks]]` and in the bank simulator's alike, read with
//! serde and turned into an [`Iso20022Config`] with every problem named by
//! its key.

use serde::Deserialize;

use super::{Bic, ClearingSystemCode, Iso20022Config, MessageVersion, ProxyTypeCode};

/// Smallest `iso20022.max_message_bytes`: a pacs.008 with an `AppHdr` is
/// some 2.5 KB before its signature, so a smaller bound refuses ordinary
/// messages.
pub const MIN_MESSAGE_BYTES: usize = 4096;
/// Largest `iso20022.max_message_bytes`: 1 MiB, the largest frame a
/// switch link takes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Widest `iso20022.default_utc_offset_minutes` either way: 14 hours, the
/// largest zone offset an ISO date-time may carry.
pub const MAX_UTC_OFFSET_MINUTES: i64 = 14 * 60;

/// A bank's `iso20022 = { ... }` table, for banks with `codec = "iso20022"`
/// (in the switch's config and the bank simulator's alike): the settings
/// of [`Iso20022Config`]. Every key is
/// optional and an unset one keeps the codec's default, so a bank without
/// the table is spoken to exactly as before. Values are read with
/// the codec's own parsers ([`Bic`], [`MessageVersion`], ...) by
/// [`Iso20022Settings::codec_config`].
///
/// ```toml
/// iso20022 = { own_bic = "FPSWHKHHXXX", versions = { pacs008 = "001.09" }, accept_other_versions = true }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iso20022Settings {
    /// Namespace version of each message, written and (unless
    /// `accept_other_versions`) the only one accepted.
    #[serde(default)]
    pub versions: Iso20022VersionSettings,
    /// Also accept other versions of the six messages on decode (default
    /// `false`): for a bank migrating between versions.
    pub accept_other_versions: Option<bool>,
    /// Largest message decoded, in bytes (default 65536).
    pub max_message_bytes: Option<usize>,
    /// The switch's own BIC: written as `GrpHdr/InstgAgt` of pacs messages,
    /// and as a camt party whose bank code is unknown (default: none).
    pub own_bic: Option<String>,
    /// Clearing system code written as `ClrSysMmbId/ClrSysId/Cd` with each
    /// bank code (default `HKNCC`); `""` writes no `ClrSysId`.
    pub clearing_system: Option<String>,
    /// `Prxy/Tp/Cd` written for each kind of FPS proxy.
    #[serde(default)]
    pub proxy_codes: Iso20022ProxyCodeSettings,
    /// Minutes east of UTC assumed for a `CreDtTm` without a zone
    /// (default 480, Hong Kong time).
    pub default_utc_offset_minutes: Option<i64>,
}

/// `iso20022.versions`: each message's version (`"001.09"` for
/// `pacs.008.001.09`), settable alone. Defaults: pacs.008 `001.08`,
/// pacs.002 `001.10`, pacs.028 `001.03`, pacs.004 `001.09`, camt.056
/// `001.08`, camt.029 `001.09`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iso20022VersionSettings {
    /// pacs.008 credit transfer.
    pub pacs008: Option<String>,
    /// pacs.002 status report (the answer to pacs.008 and pacs.028).
    pub pacs002: Option<String>,
    /// pacs.028 status request.
    pub pacs028: Option<String>,
    /// pacs.004 return.
    pub pacs004: Option<String>,
    /// camt.056 cancellation request (the switch's reversal).
    pub camt056: Option<String>,
    /// camt.029 resolution of investigation (the answer to camt.056).
    pub camt029: Option<String>,
}

/// `iso20022.proxy_codes`: the `Prxy/Tp/Cd` of each kind of FPS proxy.
/// Defaults: `MOBN`, `EMAL`, `SVID`, `HKID`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iso20022ProxyCodeSettings {
    /// Mobile number.
    pub mobile: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// FPS identifier.
    pub fps_id: Option<String>,
    /// HKID number.
    pub hkid: Option<String>,
}

impl Iso20022Settings {
    /// The codec configuration of a bank's optional table: the codec's
    /// defaults without one, else [`Iso20022Settings::codec_config`].
    pub fn codec_config_of(
        table: Option<&Iso20022Settings>,
    ) -> Result<Iso20022Config, Vec<(&'static str, String)>> {
        table.map_or_else(|| Ok(Iso20022Config::default()), Self::codec_config)
    }

    /// The codec configuration: [`Iso20022Config::default`] with the keys
    /// that are set, or every problem as (key under `iso20022`, reason).
    /// Reasons name what was expected and never repeat the value.
    pub fn codec_config(&self) -> Result<Iso20022Config, Vec<(&'static str, String)>> {
        let mut cfg = Iso20022Config::default();
        let mut errors = Vec::new();
        let v = &self.versions;
        let versions = &mut cfg.versions;
        for (key, text, slot) in [
            ("versions.pacs008", &v.pacs008, &mut versions.pacs008),
            ("versions.pacs002", &v.pacs002, &mut versions.pacs002),
            ("versions.pacs028", &v.pacs028, &mut versions.pacs028),
            ("versions.pacs004", &v.pacs004, &mut versions.pacs004),
            ("versions.camt056", &v.camt056, &mut versions.camt056),
            ("versions.camt029", &v.camt029, &mut versions.camt029),
        ] {
            let Some(text) = text else { continue };
            match MessageVersion::parse(text.as_bytes()) {
                Ok(version) => *slot = version,
                Err(e) => errors.push((
                    key,
                    format!(
                        "not a message version: {} (3 digits, a dot, 2 digits, e.g. \"001.09\")",
                        e.reason
                    ),
                )),
            }
        }
        if let Some(accept) = self.accept_other_versions {
            cfg.accept_other_versions = accept;
        }
        if let Some(n) = self.max_message_bytes {
            if (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&n) {
                cfg.max_message_bytes = n;
            } else {
                errors.push((
                    "max_message_bytes",
                    format!("{n} is outside {MIN_MESSAGE_BYTES}..={MAX_MESSAGE_BYTES}"),
                ));
            }
        }
        if let Some(text) = &self.own_bic {
            match Bic::parse(text.as_bytes()) {
                Ok(bic) => cfg.own_bic = Some(bic),
                Err(e) => errors.push((
                    "own_bic",
                    format!(
                        "not a BIC: {} (8 or 11 upper-case letters and digits, the first six letters)",
                        e.reason
                    ),
                )),
            }
        }
        match self.clearing_system.as_deref() {
            None => {}
            Some("") => cfg.clearing_system = None,
            Some(text) => match ClearingSystemCode::parse(text.as_bytes()) {
                Ok(code) => cfg.clearing_system = Some(code),
                Err(e) => errors.push((
                    "clearing_system",
                    format!(
                        "not a clearing system code: {} (1 to 5 upper-case letters and digits, or \"\" for none)",
                        e.reason
                    ),
                )),
            },
        }
        let p = &self.proxy_codes;
        let codes = &mut cfg.proxy_codes;
        for (key, text, slot) in [
            ("proxy_codes.mobile", &p.mobile, &mut codes.mobile),
            ("proxy_codes.email", &p.email, &mut codes.email),
            ("proxy_codes.fps_id", &p.fps_id, &mut codes.fps_id),
            ("proxy_codes.hkid", &p.hkid, &mut codes.hkid),
        ] {
            let Some(text) = text else { continue };
            match ProxyTypeCode::parse(text.as_bytes()) {
                Ok(code) => *slot = code,
                Err(e) => errors.push((
                    key,
                    format!(
                        "not a proxy type code: {} (1 to 4 upper-case letters and digits)",
                        e.reason
                    ),
                )),
            }
        }
        if let Some(minutes) = self.default_utc_offset_minutes {
            let bounds = -MAX_UTC_OFFSET_MINUTES..=MAX_UTC_OFFSET_MINUTES;
            match i16::try_from(minutes) {
                Ok(m) if bounds.contains(&minutes) => cfg.default_utc_offset_minutes = m,
                _ => errors.push((
                    "default_utc_offset_minutes",
                    format!(
                        "{minutes} is outside -{MAX_UTC_OFFSET_MINUTES}..={MAX_UTC_OFFSET_MINUTES}"
                    ),
                )),
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_set_is_the_default_and_errors_name_their_keys() {
        assert_eq!(
            Iso20022Settings::default().codec_config(),
            Ok(Iso20022Config::default())
        );
        let s = Iso20022Settings {
            versions: Iso20022VersionSettings {
                camt056: Some("001.1".into()),
                ..Default::default()
            },
            own_bic: Some("secret".into()),
            clearing_system: Some(String::new()),
            ..Default::default()
        };
        let errors = s.codec_config().unwrap_err();
        let keys: Vec<_> = errors.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["versions.camt056", "own_bic"]);
        assert!(errors.iter().all(|(_, why)| !why.contains("secret")));
        let s = Iso20022Settings {
            clearing_system: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(s.codec_config().unwrap().clearing_system, None);
    }
}
