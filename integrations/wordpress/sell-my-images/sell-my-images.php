<?php
/**
 * Plugin Name:       Sell My Images
 * Description:       Sells 4x high-resolution versions of the images on this site: a "Buy high-res" button, payment through Stripe Checkout, the upscale made by a Sell My Images gateway.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      7.4
 * Author:            Sell My Images
 * License:           MIT
 * License URI:       https://opensource.org/licenses/MIT
 * Text Domain:       sell-my-images
 * Domain Path:       /languages
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

define( 'SMI_PLUGIN_VERSION', '0.1.0' );
define( 'SMI_PLUGIN_FILE', __FILE__ );

require_once __DIR__ . '/includes/class-smi-options.php';
require_once __DIR__ . '/includes/class-smi-gateway.php';
require_once __DIR__ . '/includes/class-smi-storefront.php';
require_once __DIR__ . '/includes/class-smi-editor.php';
require_once __DIR__ . '/includes/class-smi-settings-page.php';
require_once __DIR__ . '/includes/class-smi-sales-page.php';

add_action( 'init', 'smi_load_textdomain' );
SMI_Storefront::register();
SMI_Editor::register();
if ( is_admin() ) {
	SMI_Settings_Page::register();
	SMI_Sales_Page::register();
}

/**
 * Loads the plugin's translations (a zip installed by hand gets none from WordPress.org).
 */
function smi_load_textdomain() {
	load_plugin_textdomain( 'sell-my-images', false, dirname( plugin_basename( SMI_PLUGIN_FILE ) ) . '/languages' );
}
