<?php
/**
 * The gateway as this site's server sees it: whether it answers, whether it accepts this
 * site's pages, and its admin API (with the token, server-side only).
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

/**
 * Server-side calls to the gateway, through WordPress's HTTP API.
 */
final class SMI_Gateway {

	const TIMEOUT = 10;

	/**
	 * This site's origin as a browser sends it in Origin: scheme://host[:port].
	 *
	 * @return string
	 */
	public static function site_origin() {
		return self::origin_of( home_url() );
	}

	/**
	 * Where this site's images are, as the gateway's SMI_SOURCE_HOSTS names it: host[:port]
	 * of the uploads folder's address (a CDN's, where it is one).
	 *
	 * @return string
	 */
	public static function images_host() {
		$uploads = wp_get_upload_dir();
		$parts   = wp_parse_url( $uploads['baseurl'] );
		$host    = isset( $parts['host'] ) ? $parts['host'] : '';
		return isset( $parts['port'] ) ? $host . ':' . $parts['port'] : $host;
	}

	/**
	 * What the settings page shows: each check true, false, or a WP_Error saying why it
	 * could not be made. 'token' is null when no token is saved.
	 *
	 * @return array{answers: true|WP_Error, origin: bool|WP_Error, token: bool|WP_Error|null}
	 */
	public static function check() {
		$health  = self::request( 'GET', '/healthz' );
		$answers = is_wp_error( $health ) ? $health : self::expect_ok( $health );
		if ( is_wp_error( $answers ) ) {
			return array(
				'answers' => $answers,
				'origin'  => $answers,
				'token'   => '' === SMI_Options::admin_token() ? null : $answers,
			);
		}
		return array(
			'answers' => true,
			'origin'  => self::accepts_origin( self::site_origin() ),
			'token'   => self::token_accepted(),
		);
	}

	/**
	 * Asks the gateway what a browser asks before a checkout from this site's pages (a CORS
	 * preflight of POST /api/checkout): true when it allows the origin.
	 *
	 * @param string $origin This site's origin.
	 * @return bool|WP_Error
	 */
	public static function accepts_origin( $origin ) {
		$response = self::request(
			'OPTIONS',
			'/api/checkout',
			array(
				'headers' => array(
					'Origin'                         => $origin,
					'Access-Control-Request-Method'  => 'POST',
					'Access-Control-Request-Headers' => 'content-type',
				),
			)
		);
		if ( is_wp_error( $response ) ) {
			return $response;
		}
		$allowed = wp_remote_retrieve_header( $response, 'access-control-allow-origin' );
		return 200 === wp_remote_retrieve_response_code( $response ) && ( $allowed === $origin || '*' === $allowed );
	}

	/**
	 * Whether the gateway takes the saved admin token (null: none saved).
	 *
	 * @return bool|WP_Error|null
	 */
	public static function token_accepted() {
		if ( '' === SMI_Options::admin_token() ) {
			return null;
		}
		$answer = self::admin_get( '/admin/jobs', array( 'limit' => 1 ) );
		if ( is_wp_error( $answer ) ) {
			return 'smi_token_refused' === $answer->get_error_code() ? false : $answer;
		}
		return true;
	}

	/**
	 * The address of the gateway's seller dashboard, or '' when it has none (older gateways,
	 * or one that does not answer): any answer but 404 from /dashboard/ (a sign-in page, a
	 * redirect to one) says it is there.
	 *
	 * @return string
	 */
	public static function dashboard_url() {
		$response = self::request( 'GET', '/dashboard/' );
		if ( is_wp_error( $response ) ) {
			return '';
		}
		$code = (int) wp_remote_retrieve_response_code( $response );
		return ( 404 !== $code && $code < 500 ) ? SMI_Options::gateway_url() . '/dashboard/' : '';
	}

	/**
	 * GET a path of the admin API with the saved token; the decoded JSON answer.
	 *
	 * @param string               $path  Path under the gateway, e.g. /admin/jobs.
	 * @param array<string, mixed> $query Query parameters.
	 * @return array<string, mixed>|WP_Error
	 */
	public static function admin_get( $path, $query = array() ) {
		$token = SMI_Options::admin_token();
		if ( '' === $token ) {
			return new WP_Error( 'smi_no_token', __( 'No admin token is saved.', 'sell-my-images' ) );
		}
		$response = self::request(
			'GET',
			add_query_arg( array_map( 'rawurlencode', array_map( 'strval', $query ) ), $path ),
			array( 'headers' => array( 'Authorization' => 'Bearer ' . $token ) )
		);
		if ( is_wp_error( $response ) ) {
			return $response;
		}
		$code = (int) wp_remote_retrieve_response_code( $response );
		if ( 401 === $code ) {
			return new WP_Error( 'smi_token_refused', __( 'The gateway refused the admin token.', 'sell-my-images' ) );
		}
		$checked = self::expect_ok( $response );
		if ( is_wp_error( $checked ) ) {
			return $checked;
		}
		$body = json_decode( wp_remote_retrieve_body( $response ), true );
		if ( ! is_array( $body ) ) {
			return new WP_Error( 'smi_gateway_answer', __( 'The gateway answered something that is not JSON.', 'sell-my-images' ) );
		}
		return $body;
	}

	/**
	 * One request to the gateway; a WP_Error when none is configured or it did not answer.
	 *
	 * @param string               $method HTTP method.
	 * @param string               $path   Path (and query) under the gateway's address.
	 * @param array<string, mixed> $args   More arguments for wp_remote_request().
	 * @return array<string, mixed>|WP_Error
	 */
	private static function request( $method, $path, $args = array() ) {
		$gateway = SMI_Options::gateway_url();
		if ( '' === $gateway ) {
			return new WP_Error( 'smi_no_gateway', __( 'No gateway address is set.', 'sell-my-images' ) );
		}
		$args = array_merge(
			array(
				'method'      => $method,
				'timeout'     => self::TIMEOUT,
				'redirection' => 0,
			),
			$args
		);
		return wp_remote_request( $gateway . $path, $args );
	}

	/**
	 * True for a 2xx answer, else a WP_Error with the gateway's own message where it gave one.
	 *
	 * @param array<string, mixed> $response What wp_remote_request() returned.
	 * @return true|WP_Error
	 */
	private static function expect_ok( $response ) {
		$code = (int) wp_remote_retrieve_response_code( $response );
		if ( $code >= 200 && $code < 300 ) {
			return true;
		}
		$body    = json_decode( wp_remote_retrieve_body( $response ), true );
		$message = isset( $body['error']['message'] ) ? (string) $body['error']['message'] : '';
		return new WP_Error(
			'smi_gateway_status',
			'' !== $message
				/* translators: 1: HTTP status code, 2: the gateway's message. */
				? sprintf( __( 'The gateway answered %1$d: %2$s', 'sell-my-images' ), $code, $message )
				/* translators: %d: HTTP status code. */
				: sprintf( __( 'The gateway answered %d.', 'sell-my-images' ), $code )
		);
	}

	/**
	 * The origin of an address: scheme://host[:port], as browsers write it.
	 *
	 * @param string $url An absolute address.
	 * @return string
	 */
	private static function origin_of( $url ) {
		$parts  = wp_parse_url( $url );
		$scheme = isset( $parts['scheme'] ) ? strtolower( $parts['scheme'] ) : 'http';
		$host   = isset( $parts['host'] ) ? strtolower( $parts['host'] ) : '';
		$port   = isset( $parts['port'] ) ? ':' . $parts['port'] : '';
		return $scheme . '://' . $host . $port;
	}
}
