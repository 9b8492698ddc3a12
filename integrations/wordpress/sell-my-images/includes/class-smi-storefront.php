<?php
/**
 * The pages visitors see: images for sale get data-smi-image, [smi_buy] writes a button,
 * and the gateway's smi-checkout.js is loaded on the pages that sell something (and only
 * there). The script does the rest: the button after each marked image, the checkout and
 * the status after paying, in the language of the page's <html lang>, which WordPress
 * writes from its locale.
 *
 * Which images are marked:
 * - an image block switched to "Sell high-res" in the editor (block attribute smiSell),
 *   wherever it is shown, whatever the rule;
 * - rule "all": every image in the content of posts and pages;
 * - rule "class": every image with the seller's CSS class, on the image or on its block.
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

/**
 * Marks the images for sale and loads the storefront script where they are.
 */
final class SMI_Storefront {

	const SCRIPT = 'smi-checkout';
	const STYLE  = 'smi-storefront';

	/**
	 * The button on a line of its own under its image (the script puts it right after the
	 * image, where themes lay it out beside it).
	 */
	const CSS = 'img[data-smi-image]+.smi-buy{display:block;width:fit-content;margin:.5rem 0 0}';

	/**
	 * Post types whose every image rule "all" puts on sale.
	 */
	const ALL_IMAGES_IN = array( 'post', 'page' );

	/**
	 * Whether this page has something for sale (so the script is wanted).
	 *
	 * @var bool
	 */
	private static $selling = false;

	/**
	 * Hooks the storefront into WordPress.
	 */
	public static function register() {
		add_filter( 'render_block', array( __CLASS__, 'mark_image_block' ), 10, 2 );
		// After blocks (9), shortcodes (11) and WordPress's own image attributes (10).
		add_filter( 'the_content', array( __CLASS__, 'mark_content_images' ), 20 );
		add_shortcode( 'smi_buy', array( __CLASS__, 'buy_shortcode' ) );
		add_action( 'wp_enqueue_scripts', array( __CLASS__, 'register_script' ) );
		add_filter( 'script_loader_tag', array( __CLASS__, 'script_tag' ), 10, 2 );
	}

	/**
	 * Marks an image block for sale: switched on in the editor, or carrying the seller's class.
	 *
	 * @param string               $html  The block's HTML.
	 * @param array<string, mixed> $block The parsed block.
	 * @return string
	 */
	public static function mark_image_block( $html, $block ) {
		if ( ! isset( $block['blockName'] ) || 'core/image' !== $block['blockName'] || '' === SMI_Options::gateway_url() ) {
			return $html;
		}
		$attrs    = isset( $block['attrs'] ) && is_array( $block['attrs'] ) ? $block['attrs'] : array();
		$settings = SMI_Options::all();
		$marked   = ! empty( $attrs['smiSell'] );
		$by_class = 'class' === $settings['images']
			&& self::has_class( isset( $attrs['className'] ) ? (string) $attrs['className'] : '', $settings['css_class'] );
		if ( ! $marked && ! $by_class ) {
			return $html;
		}
		$attachment = isset( $attrs['id'] ) ? (int) $attrs['id'] : 0;
		return (string) preg_replace_callback(
			'/<img\b[^>]*>/i',
			function ( $found ) use ( $attachment ) {
				return self::mark( $found[0], $attachment );
			},
			$html,
			1
		);
	}

	/**
	 * Marks the images of a post's content that the site's rule puts on sale, and loads the
	 * script when the content sells anything (marked images, [smi_buy], marks by hand).
	 *
	 * @param string $content The post's content, blocks and shortcodes done.
	 * @return string
	 */
	public static function mark_content_images( $content ) {
		// An excerpt is made from the content with its images stripped: nothing is sold there.
		if ( is_feed() || doing_filter( 'get_the_excerpt' ) || '' === SMI_Options::gateway_url() ) {
			return $content;
		}
		$settings = SMI_Options::all();
		$rule     = $settings['images'];
		$applies  = 'class' === $rule || ( 'all' === $rule && in_array( get_post_type(), self::ALL_IMAGES_IN, true ) );
		if ( $applies ) {
			$content = (string) preg_replace_callback(
				'/<img\b[^>]*>/i',
				function ( $found ) use ( $rule, $settings ) {
					$tag = $found[0];
					if ( 'class' === $rule && ! self::has_class( self::attribute( $tag, 'class' ), $settings['css_class'] ) ) {
						return $tag;
					}
					return self::mark( $tag, 0 );
				},
				$content
			);
		}
		if ( false !== strpos( $content, 'data-smi-image' ) ) {
			self::sell();
		}
		return $content;
	}

	/**
	 * [smi_buy src="https://…/photo.jpg" label="…"]: a button that sells any image.
	 *
	 * @param array<string, string>|string $atts The shortcode's attributes.
	 * @return string
	 */
	public static function buy_shortcode( $atts ) {
		$atts = shortcode_atts(
			array(
				'src'   => '',
				'label' => '',
			),
			$atts,
			'smi_buy'
		);
		$url  = esc_url_raw( trim( (string) $atts['src'] ), array( 'http', 'https' ) );
		if ( '' === $url || '' === SMI_Options::gateway_url() ) {
			return '';
		}
		$label = trim( (string) $atts['label'] );
		self::sell();
		return sprintf(
			'<button type="button" class="smi-buy-button wp-element-button" data-smi-image="%1$s">%2$s</button>',
			esc_url( $url ),
			esc_html( '' !== $label ? $label : SMI_Options::button_text() )
		);
	}

	/**
	 * Registers the gateway's script and the button's style (loaded only where something is
	 * for sale).
	 */
	public static function register_script() {
		$gateway = SMI_Options::gateway_url();
		if ( '' === $gateway ) {
			return;
		}
		// No version of ours in its address: it is the gateway's script, under the gateway's
		// own cache headers, and changes when the gateway does.
		wp_register_script( self::SCRIPT, $gateway . '/static/smi-checkout.js', array(), null, true ); // phpcs:ignore WordPress.WP.EnqueuedResourceParameters.MissingVersion
		wp_register_style( self::STYLE, false, array(), SMI_PLUGIN_VERSION );
		wp_add_inline_style( self::STYLE, self::CSS );
		if ( self::$selling ) {
			wp_enqueue_script( self::SCRIPT );
			wp_enqueue_style( self::STYLE );
		}
	}

	/**
	 * Tells the script where the gateway is (it may live under a path behind a proxy).
	 *
	 * @param string $tag    The script's tag.
	 * @param string $handle Its handle.
	 * @return string
	 */
	public static function script_tag( $tag, $handle ) {
		if ( self::SCRIPT !== $handle ) {
			return $tag;
		}
		$attribute = ' data-smi-gateway="' . esc_attr( SMI_Options::gateway_url() ) . '"';
		return (string) preg_replace( '/<script\b/', '<script' . $attribute, $tag, 1 );
	}

	/**
	 * An <img> tag marked for sale: the address of the attachment's full-size file where it
	 * is known (never a resized copy), else its src, and the seller's words for the button.
	 *
	 * @param string $tag        The <img> tag.
	 * @param int    $attachment The attachment's id, 0 when unknown.
	 * @return string
	 */
	public static function mark( $tag, $attachment ) {
		if ( false !== stripos( $tag, 'data-smi-image' ) ) {
			return $tag;
		}
		if ( ! $attachment && preg_match( '/\bwp-image-(\d+)\b/', self::attribute( $tag, 'class' ), $id ) ) {
			$attachment = (int) $id[1];
		}
		$url = $attachment ? wp_get_attachment_url( $attachment ) : '';
		if ( ! $url ) {
			$url = html_entity_decode( self::attribute( $tag, 'src' ), ENT_QUOTES | ENT_HTML5, 'UTF-8' );
		}
		$url = esc_url( $url, array( 'http', 'https' ) );
		if ( '' === $url ) {
			return $tag;
		}
		$extra = ' data-smi-image="' . $url . '"';
		$label = SMI_Options::custom_label();
		if ( '' !== $label ) {
			$extra .= ' data-smi-label="' . esc_attr( $label ) . '"';
		}
		self::sell();
		return (string) preg_replace( '/^<img\b/i', '<img' . $extra, $tag, 1 );
	}

	/**
	 * The value of an attribute of a tag ('' when absent), as written (entities and all).
	 *
	 * @param string $tag  An HTML start tag.
	 * @param string $name The attribute's name.
	 * @return string
	 */
	public static function attribute( $tag, $name ) {
		$pattern = '/\s' . preg_quote( $name, '/' ) . '\s*=\s*(?:"([^"]*)"|\'([^\']*)\'|([^\s>]+))/i';
		if ( ! preg_match( $pattern, $tag, $found ) ) {
			return '';
		}
		return $found[ count( $found ) - 1 ];
	}

	/**
	 * Whether a class attribute's value holds a class.
	 *
	 * @param string $classes The value of a class attribute.
	 * @param string $wanted  One class name.
	 * @return bool
	 */
	public static function has_class( $classes, $wanted ) {
		return '' !== $wanted && in_array( $wanted, preg_split( '/\s+/', trim( $classes ) ), true );
	}

	/**
	 * This page sells something: load the script (now, or when scripts are registered).
	 */
	private static function sell() {
		self::$selling = true;
		if ( did_action( 'wp_enqueue_scripts' ) ) {
			wp_enqueue_script( self::SCRIPT );
			wp_enqueue_style( self::STYLE );
		}
	}
}
