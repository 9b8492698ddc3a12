<?php
/**
 * The "Sales" admin page: the day's totals and the last orders, read from the gateway's
 * admin API by this server with the saved token (the browser never sees the token or
 * talks to the admin API).
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

/**
 * The Sales page.
 */
final class SMI_Sales_Page {

	const SLUG = 'smi-sales';

	/**
	 * Orders shown; the gateway is asked for more, since unpaid checkouts are left out.
	 */
	const SHOWN = 20;
	const ASKED = 200;

	/**
	 * Currencies whose amounts Stripe counts in other than hundredths (gateway/money/currencies.py).
	 */
	const ZERO_DECIMAL  = array( 'bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf' );
	const THREE_DECIMAL = array( 'bhd', 'jod', 'kwd', 'omr', 'tnd' );

	/**
	 * What an order's cell may hold: its id, linked to its page on the seller dashboard.
	 */
	const ORDER_HTML = array(
		'a'    => array( 'href' => true ),
		'code' => array(),
	);

	/**
	 * Hooks the page into the admin.
	 */
	public static function register() {
		add_action( 'admin_menu', array( __CLASS__, 'add_page' ) );
	}

	/**
	 * The admin menu's "Sales".
	 */
	public static function add_page() {
		add_menu_page(
			__( 'Sales', 'sell-my-images' ),
			__( 'Sales', 'sell-my-images' ),
			'manage_options',
			self::SLUG,
			array( __CLASS__, 'render' ),
			'dashicons-cart'
		);
	}

	/**
	 * The page's hook suffix (its styles are loaded there).
	 *
	 * @return string
	 */
	public static function hook_suffix() {
		return 'toplevel_page_' . self::SLUG;
	}

	/**
	 * The page.
	 */
	public static function render() {
		if ( ! current_user_can( 'manage_options' ) ) {
			return;
		}
		echo '<div class="wrap smi-sales">';
		echo '<h1 class="wp-heading-inline">' . esc_html__( 'Sales', 'sell-my-images' ) . '</h1>';
		$dashboard = '' !== SMI_Options::gateway_url() ? SMI_Gateway::dashboard_url() : '';
		if ( '' !== $dashboard ) {
			printf(
				' <a class="page-title-action smi-dashboard" href="%1$s" target="_blank" rel="noopener">%2$s</a>',
				esc_url( $dashboard ),
				esc_html__( 'Open the seller dashboard', 'sell-my-images' )
			);
		}
		echo '<hr class="wp-header-end">';

		if ( '' === SMI_Options::gateway_url() || '' === SMI_Options::admin_token() ) {
			printf(
				'<div class="notice notice-warning inline"><p>%1$s <a href="%2$s">%3$s</a></p></div></div>',
				esc_html__( 'The Sales page needs the gateway’s address and its admin token.', 'sell-my-images' ),
				esc_url( admin_url( 'options-general.php?page=' . SMI_Settings_Page::SLUG ) ),
				esc_html__( 'Settings → Sell My Images', 'sell-my-images' )
			);
			return;
		}

		$today  = gmdate( 'Y-m-d' );
		$report = SMI_Gateway::admin_get(
			'/admin/reports/revenue',
			array(
				'since' => $today,
				'until' => $today,
			)
		);
		$jobs   = SMI_Gateway::admin_get( '/admin/jobs', array( 'limit' => self::ASKED ) );
		if ( is_wp_error( $report ) || is_wp_error( $jobs ) ) {
			$error = is_wp_error( $report ) ? $report : $jobs;
			printf(
				'<div class="notice notice-error inline"><p>%1$s %2$s</p></div></div>',
				esc_html__( 'The gateway’s sales could not be read:', 'sell-my-images' ),
				esc_html( $error->get_error_message() )
			);
			return;
		}
		self::render_totals( isset( $report['days'] ) && is_array( $report['days'] ) ? $report['days'] : array(), $today );
		self::render_orders( isset( $jobs['jobs'] ) && is_array( $jobs['jobs'] ) ? $jobs['jobs'] : array(), $dashboard );
		echo '</div>';
	}

	/**
	 * Today's figures, one set per currency.
	 *
	 * @param array<int, array<string, mixed>> $days  The revenue report's rows for today.
	 * @param string                           $today Today's date (UTC), as the gateway counts days.
	 */
	private static function render_totals( $days, $today ) {
		/* translators: %s: a date (the gateway counts days in UTC). */
		echo '<h2>' . esc_html( sprintf( __( 'Today (%s, UTC)', 'sell-my-images' ), $today ) ) . '</h2>';
		if ( ! $days ) {
			echo '<p class="smi-no-sales">' . esc_html__( 'No sales yet today.', 'sell-my-images' ) . '</p>';
			return;
		}
		foreach ( $days as $day ) {
			$figures = array(
				'payments' => array( __( 'Orders', 'sell-my-images' ), number_format_i18n( (int) $day['payments'] ) ),
				'gross'    => array( __( 'Gross', 'sell-my-images' ), (string) $day['gross'] ),
				'refunded' => array( __( 'Refunded', 'sell-my-images' ), (string) $day['refunded'] ),
				'net'      => array( __( 'Net', 'sell-my-images' ), (string) $day['net'] ),
			);
			printf( '<div class="smi-totals" data-smi-currency="%s">', esc_attr( (string) $day['currency'] ) );
			foreach ( $figures as $name => $figure ) {
				printf(
					'<div class="smi-total" data-smi-total="%1$s">%2$s<strong>%3$s</strong></div>',
					esc_attr( $name ),
					esc_html( $figure[0] ),
					esc_html( $figure[1] )
				);
			}
			echo '</div>';
		}
	}

	/**
	 * The last paid orders, newest first.
	 *
	 * @param array<int, array<string, mixed>> $jobs      The gateway's jobs, newest first.
	 * @param string                           $dashboard The seller dashboard's address, '' for none.
	 */
	private static function render_orders( $jobs, $dashboard ) {
		$paid = array_slice(
			array_values(
				array_filter(
					$jobs,
					function ( $job ) {
						return ! empty( $job['paid_at'] );
					}
				)
			),
			0,
			self::SHOWN
		);
		echo '<h2>' . esc_html__( 'Last orders', 'sell-my-images' ) . '</h2>';
		if ( ! $paid ) {
			echo '<p class="smi-no-orders">' . esc_html__( 'No orders yet.', 'sell-my-images' ) . '</p>';
			return;
		}
		echo '<table class="wp-list-table widefat fixed striped smi-orders"><thead><tr>';
		$columns = array(
			'date'   => __( 'Paid', 'sell-my-images' ),
			'order'  => __( 'Order', 'sell-my-images' ),
			'image'  => __( 'Image', 'sell-my-images' ),
			'buyer'  => __( 'Buyer', 'sell-my-images' ),
			'status' => __( 'Status', 'sell-my-images' ),
			'amount' => __( 'Amount', 'sell-my-images' ),
		);
		foreach ( $columns as $name => $title ) {
			printf( '<th scope="col" class="column-%1$s">%2$s</th>', esc_attr( $name ), esc_html( $title ) );
		}
		echo '</tr></thead><tbody>';
		foreach ( $paid as $job ) {
			$id    = (string) $job['job_id'];
			$image = isset( $job['image_url'] ) ? (string) $job['image_url'] : '';
			$path  = (string) wp_parse_url( $image, PHP_URL_PATH );
			$order = '<code>' . esc_html( $id ) . '</code>';
			if ( '' !== $dashboard ) {
				$order = '<a href="' . esc_url( $dashboard . 'orders/' . rawurlencode( $id ) ) . '">' . $order . '</a>';
			}
			printf(
				'<tr data-smi-job="%1$s"><td class="column-date">%2$s</td><td class="column-order">%3$s</td>'
				. '<td class="column-image"><a href="%4$s">%5$s</a><br><span class="description">%6$s</span></td>'
				. '<td class="column-buyer">%7$s</td><td class="column-status"><span class="smi-status smi-status-%8$s">%9$s</span></td>'
				. '<td class="column-amount">%10$s</td></tr>',
				esc_attr( $id ),
				esc_html( self::when( (string) $job['paid_at'] ) ),
				wp_kses( $order, self::ORDER_HTML ),
				esc_url( $image ),
				esc_html( '' !== $path ? wp_basename( $path ) : $image ),
				esc_html( sprintf( '%d×%d', (int) $job['width'], (int) $job['height'] ) ),
				esc_html( isset( $job['customer_email'] ) ? (string) $job['customer_email'] : '' ),
				esc_attr( (string) $job['status'] ),
				esc_html( self::status_label( (string) $job['status'] ) ),
				esc_html( self::money( (int) $job['amount_cents'], (string) $job['currency'] ) )
			);
		}
		echo '</tbody></table>';
	}

	/**
	 * A gateway's time in this site's timezone and formats.
	 *
	 * @param string $stamp An ISO 8601 time (UTC when it names no zone).
	 * @return string
	 */
	private static function when( $stamp ) {
		$time = strtotime( $stamp );
		if ( false === $time ) {
			return $stamp;
		}
		return (string) wp_date( get_option( 'date_format' ) . ' ' . get_option( 'time_format' ), $time );
	}

	/**
	 * An amount in a currency's smallest unit as people read it: "0.50 USD", "500 JPY".
	 *
	 * @param int    $amount   Cents, yen, fils.
	 * @param string $currency ISO 4217 code.
	 * @return string
	 */
	private static function money( $amount, $currency ) {
		$code     = strtolower( $currency );
		$decimals = in_array( $code, self::ZERO_DECIMAL, true ) ? 0 : ( in_array( $code, self::THREE_DECIMAL, true ) ? 3 : 2 );
		return number_format_i18n( $amount / ( 10 ** $decimals ), $decimals ) . ' ' . strtoupper( $code );
	}

	/**
	 * A job's status in the seller's words.
	 *
	 * @param string $status The gateway's status.
	 * @return string
	 */
	private static function status_label( $status ) {
		$labels = array(
			'pending'       => __( 'Paid, queued', 'sell-my-images' ),
			'processing'    => __( 'Upscaling', 'sell-my-images' ),
			'completed'     => __( 'Delivered', 'sell-my-images' ),
			'failed'        => __( 'Failed, refund due', 'sell-my-images' ),
			'refunding'     => __( 'Refunding', 'sell-my-images' ),
			'refunded'      => __( 'Refunded', 'sell-my-images' ),
			'refund_failed' => __( 'Refund failed: needs you', 'sell-my-images' ),
			'disputed'      => __( 'Disputed', 'sell-my-images' ),
		);
		return isset( $labels[ $status ] ) ? $labels[ $status ] : $status;
	}
}
