<?php
/**
 * Deleting the plugin removes its options, on every site of a network. The image blocks'
 * "Sell high-res" marks stay in the posts (an attribute other code ignores).
 *
 * @package SellMyImages
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

if ( is_multisite() ) {
	foreach ( get_sites( array( 'fields' => 'ids' ) ) as $smi_site ) {
		switch_to_blog( $smi_site );
		delete_option( 'smi_settings' );
		delete_option( 'smi_admin_token' );
		restore_current_blog();
	}
} else {
	delete_option( 'smi_settings' );
	delete_option( 'smi_admin_token' );
}
