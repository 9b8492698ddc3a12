<?php
/**
 * The block editor's "Sell high-res" toggle on image blocks (assets/editor.js): the block
 * attribute smiSell, kept in the block's comment, so the saved HTML stays the image
 * block's own and the page is marked when it is shown (SMI_Storefront::mark_image_block).
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

/**
 * Adds the toggle to the editor and the attribute to the image block.
 */
final class SMI_Editor {

	const SCRIPT = 'smi-editor';

	/**
	 * Hooks the editor's parts into WordPress.
	 */
	public static function register() {
		add_filter( 'register_block_type_args', array( __CLASS__, 'add_attribute' ), 10, 2 );
		add_action( 'enqueue_block_editor_assets', array( __CLASS__, 'enqueue' ) );
	}

	/**
	 * The image block knows smiSell on the server too (the REST API, server-side renders).
	 *
	 * @param array<string, mixed> $args The block type's arguments.
	 * @param string               $name The block type's name.
	 * @return array<string, mixed>
	 */
	public static function add_attribute( $args, $name ) {
		if ( 'core/image' === $name ) {
			$attributes            = isset( $args['attributes'] ) && is_array( $args['attributes'] ) ? $args['attributes'] : array();
			$attributes['smiSell'] = array(
				'type'    => 'boolean',
				'default' => false,
			);
			$args['attributes']    = $attributes;
		}
		return $args;
	}

	/**
	 * Loads the toggle with what it shows: the site's rule and its class.
	 */
	public static function enqueue() {
		wp_enqueue_script(
			self::SCRIPT,
			plugins_url( 'assets/editor.js', SMI_PLUGIN_FILE ),
			array( 'wp-hooks', 'wp-compose', 'wp-element', 'wp-block-editor', 'wp-components', 'wp-i18n' ),
			SMI_PLUGIN_VERSION,
			true
		);
		$settings = SMI_Options::all();
		wp_add_inline_script(
			self::SCRIPT,
			'window.smiEditorSettings = ' . wp_json_encode(
				array(
					'rule'       => $settings['images'],
					'cssClass'   => $settings['css_class'],
					'hasGateway' => '' !== $settings['gateway_url'],
				)
			) . ';',
			'before'
		);
		wp_set_script_translations( self::SCRIPT, 'sell-my-images', plugin_dir_path( SMI_PLUGIN_FILE ) . 'languages' );
	}
}
