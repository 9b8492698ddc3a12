<?php
/**
 * The plugin's settings: what they hold, their defaults, and how a form's values are cleaned.
 *
 * Two options: smi_settings (an array, autoloaded: every page that sells reads it) and
 * smi_admin_token (the gateway's admin token, not autoloaded, read only by admin pages and
 * never written into a page).
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

/**
 * Reads and cleans the plugin's settings.
 */
final class SMI_Options {

	const SETTINGS = 'smi_settings';
	const TOKEN    = 'smi_admin_token';

	/**
	 * Which images are for sale: every image in posts and pages, those with the chosen CSS
	 * class, or only those marked in the block editor (and [smi_buy] buttons, always).
	 */
	const RULES = array( 'all', 'class', 'marked' );

	/**
	 * The languages of the gateway's catalogues (gateway/static/i18n/) and their words for
	 * the button, the defaults a seller may replace.
	 */
	const BUTTON_DEFAULTS = array(
		'en' => 'Buy high-res',
		'fr' => 'Acheter en haute résolution',
		'de' => 'In hoher Auflösung kaufen',
		'es' => 'Comprar en alta resolución',
		'ja' => '高解像度で購入',
	);

	const LABEL_MAX = 80;

	/**
	 * The settings as saved, with defaults for what is missing.
	 *
	 * @return array{gateway_url: string, images: string, css_class: string, labels: array<string, string>}
	 */
	public static function all() {
		$saved = get_option( self::SETTINGS, array() );
		$saved = is_array( $saved ) ? $saved : array();
		return array_merge( self::defaults(), array_intersect_key( $saved, self::defaults() ) );
	}

	/**
	 * The settings of a site that has saved none.
	 *
	 * @return array{gateway_url: string, images: string, css_class: string, labels: array<string, string>}
	 */
	public static function defaults() {
		return array(
			'gateway_url' => '',
			'images'      => 'marked',
			'css_class'   => 'smi-for-sale',
			'labels'      => array(),
		);
	}

	/**
	 * The gateway's address without a trailing slash, or '' when none is set.
	 *
	 * @return string
	 */
	public static function gateway_url() {
		return (string) self::all()['gateway_url'];
	}

	/**
	 * The admin token, or '' when none is saved.
	 *
	 * @return string
	 */
	public static function admin_token() {
		return (string) get_option( self::TOKEN, '' );
	}

	/**
	 * The language of the page being made, as the catalogues name it ('fr' for fr_FR), or ''
	 * when the gateway has no catalogue for it (the script then follows the browser).
	 *
	 * @return string
	 */
	public static function page_language() {
		$base = strtolower( substr( determine_locale(), 0, 2 ) );
		return isset( self::BUTTON_DEFAULTS[ $base ] ) ? $base : '';
	}

	/**
	 * The seller's own words for the button in the page's language, or '' to keep the
	 * gateway's.
	 *
	 * @return string
	 */
	public static function custom_label() {
		$labels   = self::all()['labels'];
		$language = self::page_language();
		return ( '' !== $language && isset( $labels[ $language ] ) ) ? (string) $labels[ $language ] : '';
	}

	/**
	 * The words on a button the page writes itself ([smi_buy]): the seller's, else the
	 * catalogue's for the page's language, else English.
	 *
	 * @return string
	 */
	public static function button_text() {
		$custom = self::custom_label();
		if ( '' !== $custom ) {
			return $custom;
		}
		$language = self::page_language();
		return self::BUTTON_DEFAULTS[ '' !== $language ? $language : 'en' ];
	}

	/**
	 * Cleans the settings form (and any update_option): unknown keys dropped, a bad gateway
	 * address refused with a notice (the saved one is kept). Cleaning a clean value
	 * changes nothing, as WordPress may clean it twice.
	 *
	 * @param mixed $input The submitted settings.
	 * @return array<string, mixed>
	 */
	public static function sanitize_settings( $input ) {
		$input = is_array( $input ) ? $input : array();
		$old   = self::all();
		$clean = $old;

		if ( isset( $input['gateway_url'] ) ) {
			$url = self::clean_url( (string) $input['gateway_url'] );
			if ( null === $url ) {
				add_settings_error(
					self::SETTINGS,
					'smi_gateway_url',
					__( 'The gateway address must be a web address starting with http:// or https://. The previous address was kept.', 'sell-my-images' )
				);
			} else {
				$clean['gateway_url'] = $url;
			}
		}
		if ( isset( $input['images'] ) && in_array( $input['images'], self::RULES, true ) ) {
			$clean['images'] = $input['images'];
		}
		if ( isset( $input['css_class'] ) ) {
			$class              = sanitize_html_class( trim( (string) $input['css_class'] ) );
			$clean['css_class'] = '' !== $class ? $class : $old['css_class'];
		}
		if ( isset( $input['labels'] ) && is_array( $input['labels'] ) ) {
			$clean['labels'] = array();
			foreach ( array_keys( self::BUTTON_DEFAULTS ) as $language ) {
				$text = isset( $input['labels'][ $language ] ) ? sanitize_text_field( (string) $input['labels'][ $language ] ) : '';
				if ( '' !== $text ) {
					$clean['labels'][ $language ] = mb_substr( $text, 0, self::LABEL_MAX );
				}
			}
		}
		return $clean;
	}

	/**
	 * Cleans the token field: an empty field keeps the saved token (the form never shows
	 * it), "forget" removes it. A plain string (update_option) is taken as it is.
	 *
	 * @param mixed $input The submitted field: array{token?: string, forget?: string}, or a string.
	 * @return string
	 */
	public static function sanitize_token( $input ) {
		if ( is_string( $input ) ) {
			return trim( sanitize_text_field( $input ) );
		}
		$input = is_array( $input ) ? $input : array();
		if ( ! empty( $input['forget'] ) ) {
			return '';
		}
		$token = isset( $input['token'] ) ? trim( sanitize_text_field( (string) $input['token'] ) ) : '';
		return '' !== $token ? $token : self::admin_token();
	}

	/**
	 * An http(s) address without its trailing slash; '' for an empty field; null when it
	 * is not one.
	 *
	 * @param string $raw What was typed.
	 * @return string|null
	 */
	private static function clean_url( $raw ) {
		$raw = trim( $raw );
		if ( '' === $raw ) {
			return '';
		}
		$url  = esc_url_raw( $raw, array( 'http', 'https' ) );
		$host = wp_parse_url( $url, PHP_URL_HOST );
		if ( '' === $url || empty( $host ) ) {
			return null;
		}
		return untrailingslashit( $url );
	}
}
