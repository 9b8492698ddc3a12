<?php
/**
 * Settings → Sell My Images: the gateway's address (and whether it answers and accepts this
 * site), which images are for sale, the button's words per language, and the admin token
 * the Sales page uses. Saved through the Settings API (options.php checks the nonce and
 * manage_options).
 *
 * @package SellMyImages
 */

defined( 'ABSPATH' ) || exit;

/**
 * The settings page.
 */
final class SMI_Settings_Page {

	const SLUG  = 'sell-my-images';
	const GROUP = 'smi_settings_group';

	/**
	 * Hooks the page into the admin.
	 */
	public static function register() {
		add_action( 'admin_menu', array( __CLASS__, 'add_page' ) );
		add_action( 'admin_init', array( __CLASS__, 'register_settings' ) );
		add_filter( 'plugin_action_links_' . plugin_basename( SMI_PLUGIN_FILE ), array( __CLASS__, 'action_links' ) );
		add_action( 'admin_enqueue_scripts', array( __CLASS__, 'enqueue_style' ) );
	}

	/**
	 * The plugin's admin styles, on its own pages only.
	 *
	 * @param string $hook_suffix The admin page being shown.
	 */
	public static function enqueue_style( $hook_suffix ) {
		if ( 'settings_page_' . self::SLUG === $hook_suffix || SMI_Sales_Page::hook_suffix() === $hook_suffix ) {
			wp_enqueue_style( 'smi-admin', plugins_url( 'assets/admin.css', SMI_PLUGIN_FILE ), array(), SMI_PLUGIN_VERSION );
		}
	}

	/**
	 * Settings → Sell My Images.
	 */
	public static function add_page() {
		add_options_page(
			__( 'Sell My Images', 'sell-my-images' ),
			__( 'Sell My Images', 'sell-my-images' ),
			'manage_options',
			self::SLUG,
			array( __CLASS__, 'render' )
		);
	}

	/**
	 * A "Settings" link beside "Deactivate" on the Plugins page.
	 *
	 * @param array<int|string, string> $links The plugin's links.
	 * @return array<int|string, string>
	 */
	public static function action_links( $links ) {
		$url = admin_url( 'options-general.php?page=' . self::SLUG );
		array_unshift( $links, '<a href="' . esc_url( $url ) . '">' . esc_html__( 'Settings', 'sell-my-images' ) . '</a>' );
		return $links;
	}

	/**
	 * The two options, their sections and fields.
	 */
	public static function register_settings() {
		register_setting(
			self::GROUP,
			SMI_Options::SETTINGS,
			array(
				'type'              => 'array',
				'sanitize_callback' => array( 'SMI_Options', 'sanitize_settings' ),
				'default'           => SMI_Options::defaults(),
				'show_in_rest'      => false,
			)
		);
		register_setting(
			self::GROUP,
			SMI_Options::TOKEN,
			array(
				'type'              => 'string',
				'sanitize_callback' => array( 'SMI_Options', 'sanitize_token' ),
				'default'           => '',
				'show_in_rest'      => false,
			)
		);

		add_settings_section( 'smi_gateway', __( 'Gateway', 'sell-my-images' ), array( __CLASS__, 'gateway_section' ), self::SLUG );
		add_settings_field(
			'smi_gateway_url',
			__( 'Gateway address', 'sell-my-images' ),
			array( __CLASS__, 'gateway_field' ),
			self::SLUG,
			'smi_gateway',
			array( 'label_for' => 'smi_gateway_url' )
		);

		add_settings_section( 'smi_images', __( 'Images for sale', 'sell-my-images' ), '__return_false', self::SLUG );
		add_settings_field( 'smi_images_rule', __( 'Sell', 'sell-my-images' ), array( __CLASS__, 'images_field' ), self::SLUG, 'smi_images' );

		add_settings_section( 'smi_button', __( 'Button', 'sell-my-images' ), array( __CLASS__, 'button_section' ), self::SLUG );
		foreach ( SMI_Options::BUTTON_DEFAULTS as $language => $default ) {
			add_settings_field(
				'smi_label_' . $language,
				self::language_name( $language ),
				array( __CLASS__, 'label_field' ),
				self::SLUG,
				'smi_button',
				array(
					'label_for' => 'smi_label_' . $language,
					'language'  => $language,
					'default'   => $default,
				)
			);
		}

		add_settings_section( 'smi_sales', __( 'Sales', 'sell-my-images' ), array( __CLASS__, 'sales_section' ), self::SLUG );
		add_settings_field(
			'smi_admin_token',
			__( 'Admin token', 'sell-my-images' ),
			array( __CLASS__, 'token_field' ),
			self::SLUG,
			'smi_sales',
			array( 'label_for' => 'smi_admin_token' )
		);
	}

	/**
	 * The page.
	 */
	public static function render() {
		if ( ! current_user_can( 'manage_options' ) ) {
			return;
		}
		?>
		<div class="wrap">
			<h1><?php echo esc_html( get_admin_page_title() ); ?></h1>
			<form action="<?php echo esc_url( admin_url( 'options.php' ) ); ?>" method="post">
				<?php
				settings_fields( self::GROUP );
				do_settings_sections( self::SLUG );
				submit_button();
				?>
			</form>
		</div>
		<?php
	}

	/**
	 * What the gateway needs to know about this site, and whether it does.
	 */
	public static function gateway_section() {
		$origin = SMI_Gateway::site_origin();
		$host   = SMI_Gateway::images_host();
		echo '<p>' . esc_html__( 'The gateway sells the images: it takes the payment through Stripe Checkout, upscales the image and sends the buyer the download. Its operator adds this site to two of its settings and restarts it:', 'sell-my-images' ) . '</p>';
		echo '<pre class="smi-env"><code>SMI_STOREFRONT_ORIGINS=…,' . esc_html( $origin ) . "\nSMI_SOURCE_HOSTS=…," . esc_html( $host ) . '</code></pre>';
		echo '<p class="description">' . esc_html__( 'The first lets this site’s pages call the gateway (and bring buyers back here after paying); the second lets the gateway fetch the images it sells from where they are.', 'sell-my-images' ) . '</p>';
		if ( '' !== SMI_Options::gateway_url() ) {
			self::render_checks( SMI_Gateway::check(), $origin );
		}
	}

	/**
	 * The checks' results, one line each.
	 *
	 * @param array<string, mixed> $checks What SMI_Gateway::check() found.
	 * @param string               $origin This site's origin.
	 */
	private static function render_checks( $checks, $origin ) {
		/* translators: %s: this site's origin, e.g. https://example.com */
		$origin_text = sprintf( __( 'The gateway accepts this site’s pages (%s).', 'sell-my-images' ), $origin );
		/* translators: %s: this site's origin, e.g. https://example.com */
		$origin_no = sprintf( __( 'The gateway does not accept this site’s pages yet: add %s to its SMI_STOREFRONT_ORIGINS.', 'sell-my-images' ), $origin );
		$lines     = array(
			'answers' => array( __( 'The gateway answers.', 'sell-my-images' ), '' ),
			'origin'  => array( $origin_text, $origin_no ),
			'token'   => array( __( 'The gateway accepts the admin token.', 'sell-my-images' ), __( 'The gateway refused the admin token.', 'sell-my-images' ) ),
		);
		echo '<ul class="smi-checks">';
		foreach ( $lines as $name => $words ) {
			$result = $checks[ $name ];
			if ( null === $result ) {
				continue;
			}
			if ( is_wp_error( $result ) ) {
				$state = 'error';
				/* translators: %s: why the gateway could not be asked. */
				$text = sprintf( __( 'The gateway does not answer: %s', 'sell-my-images' ), $result->get_error_message() );
			} else {
				$state = $result ? 'ok' : 'error';
				$text  = $result ? $words[0] : $words[1];
			}
			printf(
				'<li class="smi-check smi-check-%1$s" data-smi-check="%2$s" data-smi-state="%1$s"><span aria-hidden="true">%3$s</span> %4$s</li>',
				esc_attr( $state ),
				esc_attr( $name ),
				'ok' === $state ? '✓' : '✗',
				esc_html( $text )
			);
			// A gateway that does not answer cannot be asked anything else: one line says so.
			if ( is_wp_error( $result ) ) {
				break;
			}
		}
		echo '</ul>';
	}

	/**
	 * The gateway's address.
	 */
	public static function gateway_field() {
		printf(
			'<input type="url" class="regular-text code" id="smi_gateway_url" name="%1$s[gateway_url]" value="%2$s" placeholder="https://gateway.example.com">',
			esc_attr( SMI_Options::SETTINGS ),
			esc_attr( SMI_Options::gateway_url() )
		);
		echo '<p class="description">' . esc_html__( 'Where your Sell My Images gateway answers, e.g. https://gateway.example.com. Its storefront script is loaded from there.', 'sell-my-images' ) . '</p>';
	}

	/**
	 * Which images are for sale.
	 */
	public static function images_field() {
		$settings = SMI_Options::all();
		$name     = SMI_Options::SETTINGS;
		$choices  = array(
			'all'    => __( 'Every image in posts and pages', 'sell-my-images' ),
			'class'  => __( 'Only images with this CSS class:', 'sell-my-images' ),
			'marked' => __( 'Only images switched to “Sell high-res” in the editor', 'sell-my-images' ),
		);
		echo '<fieldset><legend class="screen-reader-text">' . esc_html__( 'Images for sale', 'sell-my-images' ) . '</legend>';
		foreach ( $choices as $value => $words ) {
			printf(
				'<label><input type="radio" name="%1$s[images]" value="%2$s"%3$s> %4$s</label>',
				esc_attr( $name ),
				esc_attr( $value ),
				checked( $settings['images'], $value, false ),
				esc_html( $words )
			);
			if ( 'class' === $value ) {
				printf(
					' <input type="text" class="regular-text code" id="smi_css_class" name="%1$s[css_class]" value="%2$s" aria-label="%3$s">',
					esc_attr( $name ),
					esc_attr( $settings['css_class'] ),
					esc_attr__( 'CSS class of the images for sale', 'sell-my-images' )
				);
			}
			echo '<br>';
		}
		echo '</fieldset>';
		echo '<p class="description">' . esc_html__( 'In the block editor, an image block’s “Additional CSS class(es)” counts, and so does its “Sell high-res” switch, whatever you choose here. [smi_buy src="…"] makes a button for any image address.', 'sell-my-images' ) . '</p>';
	}

	/**
	 * What the button fields are for.
	 */
	public static function button_section() {
		echo '<p>' . esc_html__( 'The words on the button under each image for sale, in the language of the page (this site’s language in Settings → General). Leave a field empty for the gateway’s own words, shown in grey.', 'sell-my-images' ) . '</p>';
	}

	/**
	 * The button's words in one language.
	 *
	 * @param array{language: string, default: string} $args The field's language and its default words.
	 */
	public static function label_field( $args ) {
		$labels = SMI_Options::all()['labels'];
		printf(
			'<input type="text" class="regular-text" id="smi_label_%1$s" name="%2$s[labels][%1$s]" value="%3$s" placeholder="%4$s" lang="%1$s" maxlength="%5$d">',
			esc_attr( $args['language'] ),
			esc_attr( SMI_Options::SETTINGS ),
			esc_attr( isset( $labels[ $args['language'] ] ) ? $labels[ $args['language'] ] : '' ),
			esc_attr( $args['default'] ),
			(int) SMI_Options::LABEL_MAX
		);
	}

	/**
	 * What the Sales page needs.
	 */
	public static function sales_section() {
		echo '<p>' . esc_html__( 'The Sales page reads the last orders and the day’s totals from the gateway’s admin API with its admin token (SMI_ADMIN_TOKEN), and links to the gateway’s seller dashboard where it has one. The token stays on this server: it is never written into a page.', 'sell-my-images' ) . '</p>';
	}

	/**
	 * The admin token: a field that is always empty (the saved token is never shown).
	 */
	public static function token_field() {
		$saved = '' !== SMI_Options::admin_token();
		printf(
			'<input type="password" class="regular-text code" id="smi_admin_token" name="%1$s[token]" value="" autocomplete="new-password" placeholder="%2$s">',
			esc_attr( SMI_Options::TOKEN ),
			esc_attr( $saved ? __( 'A token is saved', 'sell-my-images' ) : '' )
		);
		if ( $saved ) {
			printf(
				' <label><input type="checkbox" name="%1$s[forget]" value="1"> %2$s</label>',
				esc_attr( SMI_Options::TOKEN ),
				esc_html__( 'Forget the saved token', 'sell-my-images' )
			);
			echo '<p class="description">' . esc_html__( 'A token is saved. Leave the field empty to keep it.', 'sell-my-images' ) . '</p>';
		}
	}

	/**
	 * A language's name in the admin's language.
	 *
	 * @param string $language A catalogue's language code.
	 * @return string
	 */
	private static function language_name( $language ) {
		$names = array(
			'en' => __( 'English', 'sell-my-images' ),
			'fr' => __( 'French', 'sell-my-images' ),
			'de' => __( 'German', 'sell-my-images' ),
			'es' => __( 'Spanish', 'sell-my-images' ),
			'ja' => __( 'Japanese', 'sell-my-images' ),
		);
		return $names[ $language ];
	}
}
